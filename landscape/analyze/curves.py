"""Mode-connecting curves: a quadratic Bezier curve or a one-bend polygonal chain between two networks.

Garipov et al., *Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs* (NeurIPS 2018), §3:
the curve ``phi_theta(t)``, ``t`` in ``[0, 1]``, runs from ``w0`` to ``w1`` through a trainable bend
``theta``:

* Bezier (eq. 3 with one bend): ``(1 - t)^2 w0 + 2 t (1 - t) theta + t^2 w1``;
* polygonal chain (eq. 2): ``2 (t theta + (0.5 - t) w0)`` for ``t <= 0.5``, ``2 ((t - 0.5) w1 + (1 - t) theta)``
  after.

The bend is trained to minimize the expected loss over ``t ~ U(0, 1)`` (their eq. 5), one fresh ``t``
per minibatch, through the package's :class:`~landscape.train.loop.Trainer`, so it is recorded into a
trajectory like any training run (the trajectory's vectors are the bend, one tensor ``"bend"``). Every
point of either curve is an affine combination of ``(w0, theta, w1)``, so curves are evaluated by
:func:`~landscape.evaluate.points.evaluate_points` through :class:`~landscape.evaluate.points.AffinePoints`, and a
quadratic Bezier curve lies in the plane through its three control points
(:func:`landscape.analyze.surface.plane_through`), which is how Garipov et al.'s Fig. 1 is drawn.

A Bezier curve whose bend is the midpoint ``(w0 + w1) / 2`` is the straight line, point for point, which
is the default initialization (the paper's as well).

Example:
    >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> other = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> data = (torch.randn(32, 2), torch.randint(0, 3, (32,)))
    >>> curve = fit_curve(net, other, data, steps=5, optimizer_kwargs={"lr": 0.1})
    >>> evaluate_curve(net, curve, data, ts=[0, 0.5, 1]).metrics["loss"].shape
    (3,)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._batch import describe_data
from landscape._options import parse_option
from landscape.analyze.slicing import PointLike, SliceSettings, as_anchor, coordinates, slice_problem
from landscape.evaluate.affine import AffinePoints
from landscape.evaluate.points import Strategy, evaluate_points
from landscape.functional import BNMode
from landscape.params import ParamLayout, functional_forward, parameter_mask
from landscape.problem import Problem
from landscape.results import Provenance, Result, register_result
from landscape.validation import _takes_integer_inputs, check_vector

__all__ = [
    "CurveKind",
    "ModeCurve",
    "CurveResult",
    "curve_coefficients",
    "fit_curve",
    "evaluate_curve",
]


class CurveKind(str, enum.Enum):
    """Shape of a mode-connecting curve."""

    BEZIER = "bezier"
    POLYCHAIN = "polychain"


def _kind(value: Any) -> CurveKind:
    return parse_option(CurveKind, value, "curve kind")


def curve_coefficients(kind: CurveKind | str, ts: Sequence[float] | np.ndarray | Tensor) -> np.ndarray:
    """Weights of ``(w0, theta, w1)`` at positions ``ts``, shape ``(P, 3)`` (float64; rows sum to 1).

    Example:
        >>> curve_coefficients("bezier", [0.5]).tolist()
        [[0.25, 0.5, 0.25]]
    """
    t = np.asarray(torch.as_tensor(ts).detach().cpu().numpy() if isinstance(ts, Tensor) else ts, np.float64)
    t = t.reshape(-1)
    if _kind(kind) is CurveKind.BEZIER:
        return np.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], 1)
    first = t <= 0.5
    c0 = np.where(first, 1 - 2 * t, 0.0)
    c1 = np.where(first, 2 * t, 2 - 2 * t)
    c2 = np.where(first, 0.0, 2 * t - 1)
    return np.stack([c0, c1, c2], 1)


@register_result
@dataclasses.dataclass(frozen=True)
class ModeCurve(Result):
    """A curve between two networks: its three control points and how the bend was trained.

    Attributes:
        control: ``(3, D)`` ``[w0, theta, w1]`` (endpoints and bend).
        shape: ``"bezier"`` or ``"polychain"`` (a :class:`CurveKind` value).
        history: Per-epoch training metrics of the bend (``"epoch"``, ``"step"``, ``"train_loss"``), each ``(E,)``.
        layout: The networks' parameter layout (``ParamLayout.to_dict()``).
        provenance: Seed, data, optimizer and schedule.
    """

    _dims = {"control": ("control", "param"), "history.*": ("epoch",)}
    _coords = {"history.epoch": "epoch"}
    _flat = ("history",)
    _table = ("epoch",)
    _thumb = ("history.train_loss", "line")

    control: np.ndarray
    shape: str = "bezier"
    history: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    def coefficients(self, ts: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(P, 3)`` weights of the control points at ``ts``."""
        return curve_coefficients(self.shape, ts)

    def points(self, ts: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(P, D)`` parameter vectors on the curve (float64)."""
        return self.coefficients(ts) @ np.asarray(self.control, np.float64)

    @property
    def bend(self) -> np.ndarray:
        """The bend ``theta``, shape ``(D,)``."""
        return np.asarray(self.control[1])


@register_result
@dataclasses.dataclass(frozen=True)
class CurveResult(Result):
    """Metrics along a curve.

    Attributes:
        ts: ``(n,)`` positions on the curve (0 and 1 are the endpoints).
        metrics: Name -> ``(n,)`` values (``"outputs"``: ``(n, N, *out)``).
        control: ``(3, D)`` control points ``[w0, theta, w1]``.
        shape: ``"bezier"`` or ``"polychain"``.
        label: Name for overlays.
        layout: The parameter layout.
        provenance: Data, version and options.
    """

    _dims = {"ts": ("t",), "metrics.*": ("t",), "control": ("control", "param")}
    _coords = {"ts": "t"}
    _table = ("t",)
    _thumb = ("metrics.loss", "line")

    ts: np.ndarray
    metrics: dict[str, np.ndarray]
    control: np.ndarray
    shape: str = "bezier"
    label: str = ""
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    def points(self) -> np.ndarray:
        """``(n, D)`` the evaluated parameter vectors (float64), e.g. to project onto a plane."""
        return curve_coefficients(self.shape, self.ts) @ np.asarray(self.control, np.float64)


def _keep_frozen() -> Any:
    """A callback putting the curve's frozen bend entries back after every step (imported late: train uses analyze)."""
    from landscape.train.callbacks import Callback

    class KeepFrozen(Callback):
        def on_step_end(self, trainer: Any, event: Any) -> None:  # noqa: D102
            trainer.model.reset_frozen()

    return KeepFrozen()


class _CurveModel(nn.Module):
    """The curve as a module for the shared training loop: its only parameter is the bend.

    ``forward`` draws ``t ~ U(0, 1)`` from the global generator (seeded by the trainer), forms the
    point on the curve and runs the base architecture there through ``functional_call``. The
    endpoints are plain tensors (not parameters or buffers): the optimizer never sees them and a
    trajectory stores only the bend. Entries of parameters the base architecture freezes
    (``requires_grad=False``) keep their starting values: ``forward`` reads them from a fixed copy, so
    they get no gradient, and they are put back in the parameter after every step (weight decay moves
    them), so a recorded bend is the one used (the package's trainers train only trainable parameters).
    """

    def __init__(self, base: nn.Module, w0: Tensor, bend: Tensor, w1: Tensor, kind: CurveKind) -> None:
        super().__init__()
        self.bend = nn.Parameter(bend.detach().clone())
        self.w0, self.w1, self.kind = w0.detach().clone(), w1.detach().clone(), kind
        self._base = [base]  # in a list: not a submodule, so its parameters are not the curve's
        self._layout = ParamLayout.from_model(base)
        self.trainable = parameter_mask(base, "trainable", self._layout)
        self.fixed = None if bool(self.trainable.all()) else bend.detach().clone()
        # the trainer's data check cannot see the base's embeddings: token ids would be cast to floats
        self.integer_inputs = _takes_integer_inputs(base)

    def reset_frozen(self) -> None:
        """Put the frozen entries of the parameter back (weight decay moves them): a recorded bend is the one used."""
        if self.fixed is not None:
            with torch.no_grad():
                self.bend.copy_(torch.where(self.trainable, self.bend, self.fixed))

    def current_bend(self) -> Tensor:
        """The bend the curve uses: the parameter, with the frozen entries at their starting values."""
        if self.fixed is None:
            return self.bend
        return torch.where(self.trainable, self.bend, self.fixed)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # the base model's inputs as the trainer calls it: model(x), model(*inputs) of a tuple batch, model(**batch)
        # of a mapping one, or a closure's own call; each call draws its t (a closure calls the model once per step)
        t = float(torch.rand(()))
        c0, c1, c2 = curve_coefficients(self.kind, [t])[0].tolist()
        w = c0 * self.w0 + c1 * self.current_bend() + c2 * self.w1
        return functional_forward(self._base[0], w, *args, train=self.training, layout=self._layout, **kwargs)


def fit_curve(
    a: nn.Module,
    b: PointLike,
    data: Any,
    *,
    kind: CurveKind | str = CurveKind.BEZIER,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    optimizer: str | Callable[..., torch.optim.Optimizer] = "sgd",
    optimizer_kwargs: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    init_bend: Tensor | None = None,
    seed: int = 0,
    trajectory: Any = None,
    record_every_steps: int | None = None,
    record_every_epochs: int | None = 1,
    progress: bool = False,
) -> ModeCurve:
    """Train the bend of a curve from ``a`` to ``b`` (Garipov et al. 2018, §3.2, eq. 5).

    Each optimizer step draws one ``t ~ U(0, 1)`` and takes a gradient step on the minibatch loss at
    ``phi_theta(t)``; the endpoints stay fixed. BatchNorm layers run in train mode with batch statistics
    during training (the base model's running statistics are never written).

    Args:
        a: First endpoint and the architecture (only read).
        b: Second endpoint: a model, a flat vector ``(D,)`` or a parameter dict (align it first for a
            curve "modulo permutations").
        data: Training data in any form the :class:`~landscape.train.loop.Trainer` takes: a tensor pair or tuple,
            an iterable of ``(X, y)``, ``(*inputs, y)`` or mapping batches, a ``Dataset``.
        kind: ``"bezier"`` (quadratic) or ``"polychain"`` (one bend).
        loss_fn: Mean-reduced loss or a loss name; ``None``: the package's default, cross-entropy for integer
            targets, MSE otherwise (the loss :func:`evaluate_curve` reports by default). A closure
            ``loss(model, batch)`` as the Trainer takes it: ``model`` runs at a point of the curve, a fresh
            ``t`` at each call, so call it once per batch.
        optimizer: Optimizer name for :func:`landscape.train.optim.make_optimizer` or a factory.
        optimizer_kwargs: Its hyperparameters (e.g. ``{"lr": 0.05, "momentum": 0.9}``).
        epochs: Training epochs (one of ``epochs`` / ``steps`` required).
        steps: Optimizer steps.
        batch_size: Minibatch size (``None``: full batch).
        init_bend: Starting bend ``(D,)`` (default: the midpoint ``(w0 + w1) / 2``, i.e. the straight line).
            Entries of parameters frozen in ``a`` (``requires_grad=False``) keep these starting values.
        seed: Seed of the ``t`` draws and the shuffling.
        trajectory: A :class:`~landscape.trajectory.store.Trajectory` to record the bend into.
        record_every_steps: Recording schedule by steps.
        record_every_epochs: Recording schedule by epochs.
        progress: Show a tqdm bar.

    Returns:
        A :class:`ModeCurve` with the trained control points and the per-epoch training history.

    Raises:
        ValueError: On an unknown kind or a point of another architecture.
        InputError: If ``a``, ``b`` or ``init_bend`` holds NaN/inf (naming the parameters), or on bad data.
    """
    from landscape.train.loop import Trainer

    k = _kind(kind)
    layout = ParamLayout.from_model(a)
    (w0, _), (w1, _) = as_anchor(a, a, layout), as_anchor(a, b, layout)
    theta = 0.5 * (w0 + w1) if init_bend is None else torch.as_tensor(init_bend).to(w0.dtype)
    layout.check_vector(theta)
    # named here: the trainer would only see the NaN in its one parameter, the bend
    for name, vec in (("a", w0), ("b", w1), ("init_bend", theta)):
        check_vector(vec, name, layout)
    module = _CurveModel(a, w0, theta, w1, k)
    tr = Trainer(
        module,
        data,
        loss_fn,
        optimizer,
        optimizer_kwargs=optimizer_kwargs,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        trajectory=trajectory,
        record_every_steps=record_every_steps,
        record_every_epochs=record_every_epochs,
        tags={"curve": k.value},
        progress=progress,
        callbacks=[_keep_frozen()] if module.fixed is not None else (),  # before the recorder
    ).fit()
    trained = tr.model  # the trainer's copy of ``module``
    assert isinstance(trained, _CurveModel)
    bend = trained.current_bend().detach()
    keys = sorted({key for h in tr.history_ for key in h})
    hist = {key: np.asarray([h.get(key, np.nan) for h in tr.history_], np.float64) for key in keys}
    prov = Provenance.here(
        seed=seed,
        data=describe_data(data),
        kind=k.value,
        steps=tr.step,
        optimizer=optimizer if isinstance(optimizer, str) else "custom",
        optimizer_kwargs={
            kk: float(v) if isinstance(v, int | float) else str(v) for kk, v in (optimizer_kwargs or {}).items()
        },
    )
    control = torch.stack([w0, bend.to(w0.dtype), w1]).cpu().numpy()
    return ModeCurve(control=control, shape=k.value, history=hist, layout=layout.to_dict(), provenance=prov)


def evaluate_curve(
    problem: Problem | nn.Module,
    curve: ModeCurve,
    data: Any = None,
    *,
    ts: Sequence[float] | np.ndarray | None = None,
    metrics: Sequence[str] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    bn_mode: BNMode | str | None = None,
    bn_data: Any = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    label: str = "",
    progress: bool = False,
    data_description: str | None = None,
) -> CurveResult:
    """Metrics at points of a curve, by the evaluation engine (points are affine in the control points).

    The evaluation keywords mean what they mean in every slice (:class:`~landscape.analyze.slicing.SliceOptions`,
    ``docs/arguments.md``).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (only read; its buffers are used in
            eval mode) with ``data``.
        curve: From :func:`fit_curve` (or built by hand).
        data: Shorthand only: tensor pair or iterable of ``(X, y)`` batches (an error beside a Problem).
        ts: ``(n,)`` positions (default ``linspace(0, 1, 25)``); finite numbers, not a count.
        metrics: Metric names for :func:`~landscape.evaluate.points.evaluate_points`; default the loss and, for
            integer class targets, the accuracy (as every slice).
        loss_fn: Shorthand only: the loss (default: by target dtype).
        bn_mode: ``"eval"`` (the model's running statistics), ``"train"`` (each batch's statistics) or
            ``"recompute"`` (each point's running statistics recomputed over ``bn_data`` first, as Garipov et
            al. do with the training set: ``torch.optim.swa_utils.update_bn``); default the problem's
            (``"eval"`` for the shorthand).
        bn_data: The statistics data of ``bn_mode="recompute"`` (default: the evaluated data).
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations (default 1 GiB).
        strategy: ``"auto"`` (default), ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        label: Name for overlays.
        progress: Show a tqdm bar.
        data_description: The data's description in the provenance (default: the problem's).

    Returns:
        A :class:`CurveResult`.

    Raises:
        ValueError: If the curve does not fit the model, ``ts`` is not a non-empty 1-D sequence of finite numbers,
            or ``bn_mode="interpolate"`` (the bend has no buffers).
        TypeError: If ``data`` is given beside a :class:`~landscape.problem.Problem`.
    """
    given = None if bn_mode is None else parse_option(BNMode, bn_mode, "bn_mode")  # "EVAL" too; a bad one lists
    if given is BNMode.INTERPOLATE:
        raise ValueError(
            "bn_mode='interpolate' needs buffers at every control point; the bend has none: use 'eval', 'train' "
            "or 'recompute'"
        )
    t = coordinates(np.linspace(0, 1, 25) if ts is None else ts, "ts")  # ts=25 is not 25 points
    settings = SliceSettings(
        metrics=metrics,
        loss_fn=loss_fn,
        batch_size=batch_size,
        chunk_size=chunk_size,
        memory_budget=memory_budget,
        strategy=strategy,
        bn_mode=given,
        bn_data=bn_data,
        progress=progress,
        data_description=data_description,
    )
    prob = slice_problem(problem, data, settings)
    bn = given or parse_option(BNMode, prob.bn_mode, "bn_mode")
    layout = prob.layout
    if curve.layout:
        layout.check_shapes(ParamLayout.from_dict(curve.layout), "the curve")
    basis = torch.as_tensor(np.asarray(curve.control)).to(prob.dtype)
    if basis.dim() != 2 or basis.shape[0] != 3:
        raise ValueError(f"a curve's control points are (3, D) [w0, theta, w1], got shape {tuple(basis.shape)}")
    layout.check_vector(basis[0])
    pts = AffinePoints(basis, curve_coefficients(curve.shape, t))
    res = evaluate_points(prob, pts, **{**settings.engine(), "bn_mode": bn.value})
    prov = Provenance.here(
        data=data_description or prob.description,
        model=type(prob.model).__name__,
        kind=curve.shape,
        bn_mode=bn.value,
        strategy=str(getattr(strategy, "value", strategy)),
        loss=prob.loss_name,
    )
    return CurveResult(
        ts=t,
        metrics=res,
        control=np.asarray(curve.control),
        shape=curve.shape,
        label=label,
        layout=layout.to_dict(),
        provenance=prov,
    )
