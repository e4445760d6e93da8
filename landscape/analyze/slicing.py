"""What every slice shares: its evaluation keywords, its problem, its anchors and one evaluation.

A slice (:mod:`landscape.analyze.surface`) and a functional distance
(:mod:`landscape.analyze.distance`) are affine families of points ``coefs @ anchors`` evaluated by
:func:`~landscape.evaluate.points.evaluate_points` through :class:`~landscape.evaluate.points.AffinePoints`.
The evaluation keywords are the same on every one of them (see ``docs/arguments.md``), declared once here as
typed dictionaries (:class:`EngineOptions`, :class:`SliceOptions`) and shown in each function's signature by
:func:`shows_options`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from landscape._options import check_keywords, parse_option, renamed, shows_keywords
from landscape.evaluate.affine import AffinePoints
from landscape.evaluate.points import BatchMetric, Strategy, evaluate_points
from landscape.functional import BNMode
from landscape.params import ParamLayout, as_param_dict, buffers_dict, parameters_to_vector
from landscape.problem import Problem, as_problem
from landscape.results import Provenance
from landscape.trajectory.records import Snapshot, restore_model

__all__ = [
    "PointLike",
    "ProblemLike",
    "EngineOptions",
    "SliceOptions",
    "SliceSettings",
    "shows_options",
    "slice_problem",
    "begin_slice",
    "as_anchor",
    "slice_buffers",
    "evaluate_slice",
    "grid_metrics",
    "coordinates",
    "to_numpy",
]

PointLike = nn.Module | Snapshot | Tensor | np.ndarray | Mapping[str, Tensor]
ProblemLike = Problem | nn.Module
Metrics = Sequence[str | BatchMetric] | None
F = TypeVar("F", bound=Callable[..., Any])


class EngineOptions(TypedDict, total=False):
    """The evaluation keywords of every slice and distance (all optional).

    Attributes:
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"`` (default), ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"``, ``"interpolate"`` or ``"recompute"``. Default: the problem's
            (``"eval"``, running statistics), where the anchors that are models carry their own statistics: a
            slice between models (every anchor a model, or a model centre plus directions) then runs each point
            on its anchors' statistics combined with its coefficients (``"interpolate"``; directions contribute
            none), so a line's endpoints give each model's own loss. Pass ``"eval"`` for the problem model's
            statistics at every point, or ``"recompute"`` for each point's own statistics over ``bn_data``
            (as ``torch.optim.swa_utils.update_bn``; one extra forward pass per point).
        bn_data: The statistics data of ``bn_mode="recompute"`` (an input tensor, an ``(X, y)`` pair or an
            iterable of batches; default the evaluated data), e.g. the training set when evaluating a test set.
        progress: Show a progress bar (default ``False``).
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.
    """

    batch_size: int | None
    chunk_size: int | None
    memory_budget: int | str | None
    strategy: Strategy | str
    bn_mode: BNMode | str | None
    bn_data: Any
    progress: bool
    data_description: str | None
    data_desc: str | None


class SliceOptions(EngineOptions, total=False):
    """The keywords of every slice: :class:`EngineOptions` and the loss and metrics (all optional).

    Attributes:
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
    """

    loss_fn: Any
    metrics: Metrics


_DEFAULTS: dict[str, Any] = {"strategy": "auto", "progress": False}


def shows_options(options: type) -> Callable[[F], F]:
    """Decorator: the function's ``**options`` shows as the keyword-only parameters of ``options``.

    ``inspect.signature`` and ``help`` then list every keyword with its default, as if written out.

    Args:
        options: :class:`EngineOptions` or :class:`SliceOptions`.

    Returns:
        The decorator (the function itself, with ``__signature__`` set).
    """
    return shows_keywords(options, _DEFAULTS)


@dataclasses.dataclass
class SliceSettings:
    """The evaluation keywords of one call, resolved (defaults filled, the deprecated name mapped)."""

    metrics: Any = None
    loss_fn: Any = None
    batch_size: int | None = None
    chunk_size: int | None = None
    memory_budget: int | str | None = None
    strategy: Strategy | str = "auto"
    bn_mode: BNMode | str | None = None
    bn_data: Any = None
    progress: bool = False
    seed: int | None = None
    data_description: str | None = None

    @classmethod
    def of(cls, function: str, options: Mapping[str, Any], allowed: type, seed: int | None = None) -> SliceSettings:
        """The settings of a call of ``function`` with keywords ``options`` (keys of the typed dict ``allowed``).

        Raises:
            TypeError: On a keyword ``function`` does not take, or both ``data_description`` and ``data_desc``.
        """
        check_keywords(function, options, allowed)
        kw = dict(options)
        desc = renamed(kw.pop("data_description", None), kw.pop("data_desc", None), "data_desc", "data_description")
        return cls(**kw, seed=seed, data_description=desc)

    def engine(self) -> dict[str, Any]:
        """The keywords of :func:`~landscape.evaluate.points.evaluate_points`."""
        return {
            k: getattr(self, k)
            for k in (
                "metrics",
                "batch_size",
                "chunk_size",
                "memory_budget",
                "strategy",
                "bn_mode",
                "bn_data",
                "progress",
            )
        }

    def bn_name(self) -> str | None:
        """``bn_mode`` as a plain string (``None`` if not given).

        Raises:
            ValueError: On an unknown ``bn_mode``, naming the valid ones.
        """
        return parse_option(BNMode, self.bn_mode, "bn_mode").value if self.bn_mode is not None else None


def slice_problem(problem: ProblemLike, data: Any, settings: SliceSettings) -> Problem:
    """The problem of a slice: ``problem`` itself, or the one the shorthand ``(model, data, loss_fn)`` builds.

    Raises:
        TypeError: If ``data`` is given beside a :class:`~landscape.problem.Problem`.
    """
    bn = settings.bn_name()
    if isinstance(problem, Problem) and data is not None:
        raise TypeError(
            "the first argument is a Problem, which holds its data; do not pass data (pass coordinates such as "
            "alphas= or xs= by keyword)"
        )
    # The shorthand's data are held as before (the budget bounds point chunks and activations, not the data).
    return as_problem(problem, data, settings.loss_fn, bn_mode=bn if bn in ("eval", "train") else None)


def begin_slice(
    function: str, problem: ProblemLike, data: Any, options: Mapping[str, Any], seed: int | None = None
) -> tuple[SliceSettings, Problem]:
    """The settings and the problem of a call of the slice ``function`` (see :func:`slice_problem`)."""
    settings = SliceSettings.of(function, options, SliceOptions, seed)
    return settings, slice_problem(problem, data, settings)


def as_anchor(prob: ProblemLike, p: PointLike, layout: ParamLayout) -> tuple[Tensor, dict[str, Tensor] | None]:
    """(vector, buffers or None) of a model, a flat vector or a parameter dict, in the problem's dtype.

    Args:
        prob: The problem (or model) whose dtype the vector takes.
        p: A model (its buffers come along), a trajectory :class:`~landscape.trajectory.records.Snapshot` (its stored
            buffers come along, as :meth:`Trajectory.model_at` restores them), a ``(D,)`` vector (a tensor, or a
            numpy array such as a result's ``center`` or ``directions[0]``) or a parameter dict.
        layout: The parameter layout the vector must fit.

    Returns:
        The ``(D,)`` vector and the model's buffers (a snapshot's: those it stored, else the problem model's;
        ``None`` for a vector or a dict).

    Raises:
        TypeError: If ``p`` is none of these.
        ValueError: If the vector does not fit the layout, or the model or snapshot is of another architecture.
    """
    model = prob.model if isinstance(prob, Problem) else prob
    dtype = prob.dtype if isinstance(prob, Problem) else next(iter(model.parameters())).dtype
    if isinstance(p, Snapshot):  # the model it holds, as Trajectory.model_at rebuilds it (stored buffers included)
        p = restore_model(model, p)
    if isinstance(p, nn.Module):
        # same count, other shapes (Linear(3, 4) then (4, 3), or the reverse) would give a meaningless point
        layout.check_shapes(ParamLayout.from_model(p), f"a point given as a model ({type(p).__name__})")
        vec, bufs = parameters_to_vector(p), buffers_dict(p)
    elif isinstance(p, Tensor | np.ndarray):
        vec, bufs = torch.as_tensor(p).detach(), None
    elif isinstance(p, Mapping):
        vec, bufs = layout.flatten(as_param_dict(model, p, layout)), None  # may leave frozen tensors out
    else:
        raise TypeError(
            "a point or direction must be a model, a trajectory snapshot, a flat (D,) vector (tensor or numpy "
            f"array) or a parameter dict, got {type(p).__name__}"
        )
    layout.check_vector(vec)
    return vec.to(dtype), bufs


def slice_buffers(
    prob: Problem,
    anchors: Sequence[tuple[Tensor, Mapping[str, Tensor] | None]],
    bn_mode: BNMode | str | None,
    directions: int = 0,
) -> tuple[BNMode, list[dict[str, Tensor]] | None]:
    """The BatchNorm policy of a slice and, for ``"interpolate"``, each anchor's buffers in the problem's dtype.

    With ``bn_mode`` not given and the problem in ``"eval"`` mode, anchors given as models keep their own
    running statistics: if every point anchor (all but the last ``directions``) is a model with buffers and
    one of them differs from the problem model's, the slice interpolates them (directions get zeros, so a
    plane's points keep its centre's statistics). Otherwise nothing changes (the problem model's statistics).
    Two trained BatchNorm networks differ most in their statistics, so a line from ``a`` to ``b`` on ``a``'s
    statistics would not give ``b``'s loss at alpha 1.

    Args:
        prob: The problem.
        anchors: ``k`` pairs (``(D,)`` vector, buffers or None) from :func:`as_anchor`.
        bn_mode: The slice's ``bn_mode`` (``None``: not given).
        directions: How many of the last anchors are directions (they carry no statistics).

    Returns:
        The mode and ``k`` buffer dicts (``None`` unless the mode is ``"interpolate"``).

    Raises:
        ValueError: If ``bn_mode="interpolate"`` and a point anchor is not a model.
    """
    points = anchors[: len(anchors) - directions]
    bn = parse_option(BNMode, bn_mode or prob.bn_mode, "bn_mode")
    if bn_mode is None and bn is BNMode.EVAL and points and all(b for _, b in points):
        mine = dict(prob.model.named_buffers())
        same = all(
            b.keys() == mine.keys() and all(torch.equal(v, mine[k].to(v)) for k, v in b.items())  # type: ignore[union-attr]
            for _, b in points
        )
        bn = BNMode.EVAL if same else BNMode.INTERPOLATE
    if bn is not BNMode.INTERPOLATE:
        return bn, None
    if any(b is None for _, b in points):
        raise ValueError(
            "bn_mode='interpolate' needs the anchors given as models (their buffers are interpolated), got a vector "
            "or a parameter dict"
        )
    own = [{k: (v.to(prob.dtype) if v.is_floating_point() else v) for k, v in b.items()} for _, b in points]  # type: ignore[union-attr]
    return bn, own + [{k: torch.zeros_like(v) for k, v in own[0].items()} for _ in range(directions)]


def evaluate_slice(
    prob: Problem,
    anchors: Sequence[tuple[Tensor, dict[str, Tensor] | None]],
    coefs: np.ndarray,
    settings: SliceSettings,
    extra: dict[str, Any],
    directions: int = 0,
) -> tuple[dict[str, np.ndarray], int, Provenance]:
    """Evaluate the points ``coefs @ anchors``.

    Args:
        prob: The problem.
        anchors: ``k`` pairs (``(D,)`` vector, buffers or None) from :func:`as_anchor`.
        coefs: ``(P, k)`` coefficients of the points.
        settings: The call's evaluation keywords.
        extra: Provenance entries (``kind`` and the slice's options).
        directions: How many of the last anchors are directions (a plane's), not points: see
            :func:`slice_buffers`.

    Returns:
        The metrics (name -> ``(P, ...)``), the number of points with a non-finite loss, and the provenance.

    Raises:
        ValueError: If ``bn_mode="interpolate"`` and an anchor is not a model.
    """
    basis = torch.stack([a for a, _ in anchors])
    bn, bufs = slice_buffers(prob, anchors, settings.bn_mode, directions)
    res = evaluate_points(prob, AffinePoints(basis, coefs, bufs), **{**settings.engine(), "bn_mode": bn.value})
    bad = int((~np.isfinite(res["loss"])).sum()) if "loss" in res else 0
    prov = Provenance.here(
        seed=settings.seed,
        data=settings.data_description or prob.description,
        model=type(prob.model).__name__,
        strategy=str(getattr(settings.strategy, "value", settings.strategy)),
        bn_mode=bn.value,
        loss=prob.loss_name,
        **extra,
    )
    return res, bad, prov


def grid_metrics(res: Mapping[str, np.ndarray], ny: int, nx: int) -> dict[str, np.ndarray]:
    """Metrics of ``ny * nx`` points (row-major) as ``(ny, nx, ...)`` grids."""
    return {k: v.reshape(ny, nx, *v.shape[1:]) for k, v in res.items()}


def coordinates(values: Any, name: str) -> np.ndarray:
    """``values`` (a sequence, or one float) as a 1-D float64 array.

    Raises:
        ValueError: If it has more than one dimension (a meshgrid, say), is empty or holds NaN/inf, or is a bare
            integer (``line(net, a, b, data, 11)`` meant 11 points, not the one position 11).
    """
    if isinstance(values, int | np.integer) and not isinstance(values, bool):
        raise ValueError(
            f"{name} are positions, not a count: got the integer {values}; for {values} evenly spaced points pass "
            f"np.linspace(start, stop, {values}) (e.g. np.linspace(0, 1, {values})), for the one position {values} "
            f"pass [{values}]"
        )
    if isinstance(values, Tensor | tuple | list) and any(isinstance(v, Tensor) and v.dim() > 0 for v in values):
        raise ValueError(
            f"{name} must be numbers, got tensors (data?): the data comes before {name}, or pass {name}= by keyword"
        )
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name} must be a 1-D sequence of finite numbers, got {type(values).__name__} ({e})"
        ) from None
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a 1-D sequence of finite numbers, got an array of shape {arr.shape}")
    arr = arr.reshape(-1)
    bad = int((~np.isfinite(arr)).sum())
    if arr.size == 0 or bad:
        got = "nothing" if arr.size == 0 else f"{bad} NaN/inf"
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers, got {got}")
    return arr


def to_numpy(t: Tensor) -> np.ndarray:
    """A tensor's values as a numpy array (detached, on the CPU; bfloat16, which numpy lacks, as float32)."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
