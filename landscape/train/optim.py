"""Optimizer extensions from Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces".

Three things, each usable wherever a ``torch.optim`` optimizer is (``step(closure)``, ``zero_grad``,
``param_groups``, ``state``, ``state_dict`` / ``load_state_dict``):

* :class:`RK2` wraps any ``torch.optim`` optimizer and integrates the optimizer's own update field
  with an explicit second-order Runge-Kutta step (Im et al. A.3, eqs. 18-24, Table 3).
* :class:`SwitchSchedule` trains with one optimizer and switches to another at given steps or
  fractions of training (Im et al. Sec. 4.3: at 25%, 50% and 75%), reporting each switch through
  ``pop_events()`` so the training loop tags the trajectory with it.
* :func:`make_optimizer` builds the paper's seven methods by name (:data:`METHODS`).

Readings chosen here (the paper leaves them open):

* The RK2 field X is the inner optimizer's displacement for one step, learning rate included, so
  h is absorbed in the learning rate: ``k = X(theta) = step(theta) - theta`` (for SGD ``-lr * g``; for
  Adam Adam's update). Both stages start from the same optimizer state, the state *before* the outer
  step, so k1 and k2 are values of one and the same field. The state the inner optimizer keeps is
  the one after stage 1 (its update from the gradient at theta_t); stage 2's update is discarded.
  Hence the state advances exactly once per outer step, and with Euler coefficients (1, 0, 0) the
  wrapper reproduces the inner optimizer bit for bit (the new point is formed as
  ``theta_1 + (a1 - 1) k1 + a2 k2`` with ``theta_1`` the stage-1 point itself).
* Both stages see the same minibatch (the closure) and, by default, the same random numbers
  (dropout masks): the global RNG is rewound to its state at stage 1 before stage 2, so the RNG
  ends where one plain step would leave it.
* Default hyperparameters: Sec. 3.4 gives the learning-rate grids (SGD {0.2, 0.1, 0.05, 0.01};
  adaptive {0.002, 0.001, 0.0005, 0.0001}; doubled for the RK2 versions) and the figure captions pick
  SGD 0.05 and Adam 0.001 (Figs. 7, 13-15); Adadelta uses lr 1 (A.2.3, eq. 16: "eta is set to 1";
  Fig. 7d: "the learning rate is not required for Adadelta"). The paper has no learning-rate table
  and does not state the momentum coefficient, RMSprop's decay or which RK2 variant the main
  experiments use: momentum 0.9, torch's RMSprop/Adadelta/Adam constants and Heun are used.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from landscape._options import parse_option

__all__ = [
    "Method",
    "METHODS",
    "RKMethod",
    "RK_COEFFICIENTS",
    "RK2",
    "Phase",
    "SwitchSchedule",
    "default_hyperparameters",
    "make_optimizer",
]


# --------------------------------------------------------------------------- RK2


class RKMethod(str, enum.Enum):
    """Named second-order explicit Runge-Kutta schemes (Im et al. A.3, Table 3; plus Euler for reference)."""

    MIDPOINT = "midpoint"
    HEUN = "heun"
    RALSTON = "ralston"
    EULER = "euler"


# (a1, a2, q1): theta_new = theta + a1 k1 + a2 k2, k2 = X(theta + q1 k1). Im et al. A.3, Table 3.
RK_COEFFICIENTS: dict[RKMethod, tuple[float, float, float]] = {
    RKMethod.MIDPOINT: (0.0, 1.0, 0.5),
    RKMethod.HEUN: (0.5, 0.5, 1.0),
    RKMethod.RALSTON: (1.0 / 3.0, 2.0 / 3.0, 0.75),
    RKMethod.EULER: (1.0, 0.0, 0.0),
}


def _coefficients(method: str | RKMethod | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(method, str):
        return RK_COEFFICIENTS[parse_option(RKMethod, method)]
    try:
        a1, a2, q1 = (float(c) for c in method)
    except (TypeError, ValueError):
        raise ValueError(
            f"method must be one of {[m.value for m in RKMethod]} or a triple (a1, a2, q1) of numbers, got {method!r}"
        ) from None
    if not all(math.isfinite(c) for c in (a1, a2, q1)):
        raise ValueError(f"RK2 coefficients must be finite, got {(a1, a2, q1)}")
    if abs(a1 + a2 - 1.0) > 1e-12:
        raise ValueError(
            f"RK2 coefficients need a1 + a2 = 1 for a consistent integrator, got a1={a1}, a2={a2}; "
            "scale the step through the inner optimizer's learning rate instead"
        )
    return a1, a2, q1


def _clone_state(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, Tensor) else copy.deepcopy(v) for k, v in state.items()}


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(saved: tuple[Tensor, list[Tensor] | None]) -> None:
    torch.set_rng_state(saved[0])
    if saved[1] is not None:
        torch.cuda.set_rng_state_all(saved[1])


class OptimizerWrapper:
    """The ``torch.optim``-compatible surface of an optimizer that steps through another one.

    ``param_groups``, ``state`` and ``zero_grad`` are those of :attr:`wrapped` (shared: changing ``lr`` in a
    group here changes it there).
    """

    @property
    def wrapped(self) -> Any:
        """The optimizer that takes the current step (RK2's inner optimizer, a schedule's current one)."""
        raise NotImplementedError

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups."""
        return self.wrapped.param_groups

    @property
    def state(self) -> Any:
        """The wrapped optimizer's per-parameter state."""
        return self.wrapped.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters (as ``torch.optim.Optimizer.zero_grad``)."""
        self.wrapped.zero_grad(set_to_none=set_to_none)


class RK2(OptimizerWrapper):
    """Second-order Runge-Kutta step on the update field of any ``torch.optim`` optimizer.

    With X the inner optimizer's displacement for one step (learning rate included; for SGD
    ``-lr * g``, for Adam Adam's update), one outer step is (Im et al. A.3, eqs. 18-20)::

        k1 = X(theta);  k2 = X(theta + q1 * k1);  theta <- theta + a1 * k1 + a2 * k2

    Both stages call ``closure`` (same minibatch, and with ``same_noise`` the same dropout masks), so
    the closure runs exactly twice per step. X is measured by letting the inner optimizer step and
    reading the displacement. State rule: both stages start from the state before the outer step;
    the state after stage 1 is kept and stage 2's state update is discarded, so momentum buffers,
    Adam moments and step counts advance once per outer step, driven by the gradient at theta.
    With ``method=(1, 0, 0)`` (``"euler"``) the wrapper equals the inner optimizer bit for bit.

    After ``step`` the parameters' ``.grad`` hold the stage-2 gradient (at ``theta + q1 * k1``).
    Attach learning-rate schedulers to ``rk2.inner`` (its ``param_groups`` are the wrapper's).
    Step hooks registered on the inner optimizer fire twice per outer step.

    Args:
        inner: The optimizer whose field is integrated. Any ``torch.optim.Optimizer`` that can step
            without a closure (not LBFGS). Its parameters are the model's parameter tensors (any shapes).
        method: ``"midpoint"`` (0, 1, 1/2), ``"heun"`` (1/2, 1/2, 1), ``"ralston"`` (1/3, 2/3, 3/4),
            ``"euler"`` (1, 0, 0), or a custom triple ``(a1, a2, q1)`` with ``a1 + a2 = 1``.
        same_noise: Rewind the global RNG (CPU, and CUDA if initialized) to its stage-1 state before
            stage 2, so both stages draw the same dropout masks and the RNG advances as for one plain step.
        buffers: The model's buffers that a forward pass updates (BatchNorm running statistics and batch
            counts): stage 2's update of them is discarded, as its optimizer state is, so they advance once per
            outer step as in a plain one. :class:`~landscape.train.loop.Trainer` passes its model's
            (:meth:`track_buffers`); without them a BatchNorm model's statistics advance twice per step.

    Raises:
        TypeError: If ``inner`` is not a ``torch.optim.Optimizer``.
        ValueError: If ``inner`` is LBFGS or ``method`` is unknown or inconsistent.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = RK2(torch.optim.SGD(model.parameters(), lr=0.1), method="ralston")
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = opt.step(closure)
    """

    def __init__(
        self,
        inner: torch.optim.Optimizer,
        method: str | RKMethod | Sequence[float] = RKMethod.HEUN,
        *,
        same_noise: bool = True,
        buffers: Iterable[Tensor] = (),
    ) -> None:
        if not isinstance(inner, torch.optim.Optimizer):
            raise TypeError(
                f"RK2 wraps a torch.optim.Optimizer, got {type(inner).__name__}; "
                "build the inner optimizer first, e.g. RK2(torch.optim.SGD(params, lr=0.1))"
            )
        if isinstance(inner, torch.optim.LBFGS):
            raise ValueError("LBFGS evaluates the closure itself and cannot be RK2-wrapped; use SGD, Adam, ...")
        self.inner = inner
        self.a1, self.a2, self.q1 = _coefficients(method)
        self.method = parse_option(RKMethod, method).value if isinstance(method, str) else (self.a1, self.a2, self.q1)
        self.same_noise = bool(same_noise)
        self.buffers = list(buffers)

    def track_buffers(self, model: torch.nn.Module) -> None:
        """Keep ``model``'s buffers advancing once per outer step (see ``buffers``)."""
        self.buffers = list(model.buffers())

    # torch.optim-compatible surface -------------------------------------------------------------
    @property
    def wrapped(self) -> torch.optim.Optimizer:
        """The inner optimizer."""
        return self.inner

    @property
    def defaults(self) -> dict[str, Any]:
        """The inner optimizer's default hyperparameters."""
        return self.inner.defaults

    def pop_events(self) -> list[dict[str, Any]]:
        """No events of its own (present so loops can treat every optimizer alike)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint: the inner optimizer's ``state_dict`` and the coefficients (safe for ``weights_only`` loading)."""
        return {
            "inner": self.inner.state_dict(),
            "rk2": {"a1": self.a1, "a2": self.a2, "q1": self.q1, "same_noise": self.same_noise},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a checkpoint made by :meth:`state_dict`.

        Raises:
            ValueError: If the checkpoint is not an RK2 checkpoint or was made with other coefficients.
        """
        if "inner" not in state_dict or "rk2" not in state_dict:
            raise ValueError("not an RK2 state_dict (needs keys 'inner' and 'rk2'); was it saved by the inner one?")
        saved = state_dict["rk2"]
        ours = (self.a1, self.a2, self.q1)
        theirs = (float(saved["a1"]), float(saved["a2"]), float(saved["q1"]))
        if theirs != ours:
            raise ValueError(f"checkpoint has RK2 coefficients {theirs}, this RK2 {ours}; use RK2(inner, {theirs})")
        self.same_noise = bool(saved.get("same_noise", self.same_noise))
        self.inner.load_state_dict(state_dict["inner"])

    def __repr__(self) -> str:
        return f"RK2(method={self.method!r}, inner={type(self.inner).__name__}, same_noise={self.same_noise})"

    # the step ---------------------------------------------------------------------------------
    def _evaluate(self, closure: Callable[[], Tensor]) -> Tensor:
        self.inner.zero_grad(set_to_none=True)  # a closure that forgets to zero would otherwise accumulate
        with torch.enable_grad():
            return closure()

    def _install(self, params: list[Tensor], states: Mapping[Tensor, dict[str, Any]]) -> None:
        for p in params:
            if p in states:
                self.inner.state[p] = states[p]
            else:
                self.inner.state.pop(p, None)  # lazily re-initialized by the inner step, as on its first step

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        """Take one RK2 step.

        Args:
            closure: Zeroes the gradients, computes the loss on the current minibatch, calls ``backward``
                and returns the loss. Called exactly twice.

        Returns:
            The loss returned by the first call, i.e. at the parameters before the step (a scalar tensor).

        Raises:
            ValueError: If ``closure`` is ``None``.
        """
        if closure is None:
            raise ValueError("RK2.step needs a closure (it evaluates the gradient twice on the same minibatch)")
        params = [p for g in self.inner.param_groups for p in g["params"]]
        st = self.inner.state
        with torch.no_grad():
            theta0 = [p.detach().clone() for p in params]
        state0 = {p: _clone_state(st[p]) for p in params if p in st}
        rng = _rng_state() if self.same_noise else None

        loss = self._evaluate(closure)  # stage 1 at theta
        self.inner.step()
        with torch.no_grad():
            theta1 = [p.detach().clone() for p in params]
            k1 = [t1 - t0 for t1, t0 in zip(theta1, theta0)]
        state1 = {p: st[p] for p in params if p in st}

        # stage 2 at theta + q1 * k1, from the same starting state
        self._install(params, state0)
        with torch.no_grad():
            mid = [t0 + self.q1 * d for t0, d in zip(theta0, k1)]
            for p, m in zip(params, mid):
                p.copy_(m)
        if rng is not None:
            _set_rng_state(rng)
        kept = [b.detach().clone() for b in self.buffers]  # as stage 1 left them
        try:
            self._evaluate(closure)
        except BaseException:  # no half step left behind: the parameters and state as before the step
            with torch.no_grad():
                for p, t0 in zip(params, theta0):
                    p.copy_(t0)
            self._install(params, state0)
            raise
        self.inner.step()
        with torch.no_grad():
            for b, k in zip(self.buffers, kept):
                b.copy_(k)
        with torch.no_grad():
            for p, t1, d1, m in zip(params, theta1, k1, mid):
                k2 = p.detach() - m
                # theta0 + a1 k1 + a2 k2 written around theta1, exact for (1, 0, 0)
                p.copy_(t1).add_(d1, alpha=self.a1 - 1.0).add_(k2, alpha=self.a2)
        self._install(params, state1)
        return loss


# --------------------------------------------------------------------------- registry


class Method(str, enum.Enum):
    """The seven optimization methods compared by Im et al. (Sec. 3.3, A.2-A.3)."""

    SGD = "sgd"
    MOMENTUM = "momentum"
    RMSPROP = "rmsprop"
    ADADELTA = "adadelta"
    ADAM = "adam"
    SGD_RK2 = "sgd_rk2"
    ADAM_RK2 = "adam_rk2"


METHODS: tuple[str, ...] = tuple(m.value for m in Method)

_DEFAULTS: dict[Method, dict[str, Any]] = {
    Method.SGD: {"lr": 0.05},  # Im et al. Sec. 3.4 grid; Figs. 13-14 captions start SGD at 0.05
    Method.MOMENTUM: {"lr": 0.05, "momentum": 0.9},  # momentum coefficient not stated in the paper
    Method.RMSPROP: {"lr": 0.001},  # Sec. 3.4 grid for adaptive methods {0.002, 0.001, 0.0005, 0.0001}
    Method.ADADELTA: {"lr": 1.0},  # A.2.3 eq. 16: "eta is set to 1"
    Method.ADAM: {"lr": 0.001},  # Figs. 7, 13 captions
    Method.SGD_RK2: {"lr": 0.1, "method": "heun"},  # Sec. 3.4: learning rate doubled for RK2 (2 x 0.05)
    Method.ADAM_RK2: {"lr": 0.002, "method": "heun"},  # Sec. 3.4: doubled (2 x 0.001)
}


def default_hyperparameters(name: str | Method) -> dict[str, Any]:
    """The default hyperparameters :func:`make_optimizer` uses for a method (a fresh copy).

    Raises:
        ValueError: If ``name`` is not one of :data:`METHODS`.
    """
    return dict(_DEFAULTS[parse_option(Method, name)])


def make_optimizer(name: str | Method, params: Iterable[Any], **hyper: Any) -> torch.optim.Optimizer | RK2:
    """Build one of the paper's seven methods by name.

    ``"sgd"`` and ``"momentum"`` are ``torch.optim.SGD``; ``"rmsprop"``, ``"adadelta"``, ``"adam"`` the
    torch optimizers of those names; ``"sgd_rk2"`` and ``"adam_rk2"`` are :class:`RK2` around SGD and Adam.
    Defaults (see :func:`default_hyperparameters` and the module docstring for their sources) are
    overridden by ``hyper``; for the RK2 methods ``method`` and ``same_noise`` go to :class:`RK2` and
    the rest to the inner optimizer.

    Args:
        name: One of :data:`METHODS` (or a :class:`Method`).
        params: Parameter tensors or parameter-group dicts, as for ``torch.optim``.
        **hyper: Hyperparameters, e.g. ``lr=0.1``, ``betas=(0.9, 0.99)``, ``method="ralston"``.

    Returns:
        The optimizer (a ``torch.optim.Optimizer`` or an :class:`RK2`).

    Raises:
        ValueError: If ``name`` is unknown (the message lists :data:`METHODS`).
        TypeError: If a hyperparameter is not accepted by the underlying optimizer.
    """
    m = parse_option(Method, name)
    kw = {**_DEFAULTS[m], **hyper}
    if m in (Method.SGD_RK2, Method.ADAM_RK2):
        rk = {"method": kw.pop("method"), "same_noise": kw.pop("same_noise", True)}
        inner = torch.optim.SGD(params, **kw) if m is Method.SGD_RK2 else torch.optim.Adam(params, **kw)
        return RK2(inner, **rk)
    cls = {
        Method.SGD: torch.optim.SGD,
        Method.MOMENTUM: torch.optim.SGD,
        Method.RMSPROP: torch.optim.RMSprop,
        Method.ADADELTA: torch.optim.Adadelta,
        Method.ADAM: torch.optim.Adam,
    }[m]
    return cls(params, **kw)


# --------------------------------------------------------------------------- switching

OptimizerSpec = str | Method | tuple[str, Mapping[str, Any]] | Callable[[Any], Any]


@dataclass(frozen=True)
class Phase:
    """One phase of a :class:`SwitchSchedule`.

    Attributes:
        start: When the phase begins: an ``int`` number of completed steps, or a ``float`` fraction
            of ``total_steps`` in [0, 1] (rounded to the nearest step). The first phase starts at 0.
        optimizer: A method name for :func:`make_optimizer` (its defaults), a pair
            ``(name, hyperparameters)``, or a factory ``params -> optimizer`` (``torch.optim`` or :class:`RK2`).
        name: Name used in switch events; default: the method name, or the optimizer's class name.
    """

    start: int | float
    optimizer: OptimizerSpec
    name: str | None = None


def _optimizer_name(opt: Any) -> str:
    if isinstance(opt, RK2):
        return f"{type(opt.inner).__name__.lower()}_rk2"
    return type(opt).__name__.lower()


class SwitchSchedule(OptimizerWrapper):
    """Train with one optimizer, then switch to others at given steps or fractions of training.

    Im et al. Sec. 4.3 switch method (e.g. SGD -> Adam) at 25%, 50% or 75% of training, each method
    with its own hyperparameters. The switch happens between steps: when the step that completes
    ``s`` steps returns (``s`` the phase start), the next phase's optimizer is built fresh on the same
    parameters, at the current weights (no jump; its state such as Adam's moments starts empty), and
    an event ``{"event": "switch", "from": ..., "to": ..., "step": s, "phase": i}`` is queued for
    :meth:`pop_events`; the loop then tags the snapshot after ``s`` steps (the switch point) with it.
    A phase starting at or after ``total_steps`` never starts (no event); a schedule whose later phases
    never start behaves exactly like its first optimizer.

    Args:
        params: Parameter tensors or parameter-group dicts (as for ``torch.optim``); every phase's
            optimizer gets a fresh copy of them.
        phases: :class:`Phase` objects or tuples ``(start, optimizer[, name])``, starts strictly
            increasing, the first at 0.
        total_steps: Length of training in steps; needed when a start is a fraction.

    Raises:
        ValueError: On an empty schedule, a first start other than 0, starts not strictly increasing
            (after rounding fractions), a fraction outside [0, 1] or without ``total_steps``.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = SwitchSchedule(model.parameters(), [(0, ("sgd", {"lr": 0.05})), (0.5, "adam")], total_steps=100)
    """

    def __init__(
        self,
        params: Iterable[Any],
        phases: Sequence[Phase | tuple[Any, ...]],
        total_steps: int | None = None,
    ) -> None:
        self._params = list(params)
        if not self._params:
            raise ValueError("SwitchSchedule got an empty parameter list")
        self.phases = tuple(p if isinstance(p, Phase) else Phase(*p) for p in phases)
        for i, p in enumerate(self.phases):
            if p.name is not None and not isinstance(p.name, str):
                raise TypeError(
                    f"phase {i}'s name must be a str, got {p.name!r}; "
                    "hyperparameters go in a pair: (start, (name, {...}))"
                )
        if not self.phases:
            raise ValueError("SwitchSchedule needs at least one phase, e.g. [(0, 'sgd')]")
        self.total_steps = total_steps
        self.switch_steps: tuple[int, ...] = tuple(self._resolve(p.start) for p in self.phases)
        if self.switch_steps[0] != 0:
            raise ValueError(f"the first phase must start at 0, got {self.phases[0].start!r}")
        for a, b in zip(self.switch_steps, self.switch_steps[1:]):
            if b <= a:
                raise ValueError(
                    f"phase starts must be strictly increasing steps, got {list(self.switch_steps)} "
                    f"(from starts {[p.start for p in self.phases]}, total_steps={total_steps})"
                )
        # phases starting at or after the end of training never start (no event after the last step)
        self._live = sum(1 for s in self.switch_steps if total_steps is None or s < total_steps) or 1
        self.steps = 0
        self.phase = 0
        self._events: list[dict[str, Any]] = []
        self._model: Any = None  # whose buffers an RK2 phase keeps advancing once a step (track_buffers)
        self.optimizer: Any = self._build(0)

    def track_buffers(self, model: torch.nn.Module) -> None:
        """Have every RK2 phase, current and later, advance ``model``'s buffers once a step (see :class:`RK2`)."""
        self._model = model
        if isinstance(self.optimizer, RK2):
            self.optimizer.track_buffers(model)

    def _resolve(self, start: int | float) -> int:
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise ValueError(f"a phase start must be an int step or a float fraction, got {start!r}")
        if isinstance(start, int):
            if start < 0:
                raise ValueError(f"a phase start step must be >= 0, got {start}")
            return start
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"a fractional phase start must lie in [0, 1], got {start}; pass an int for a step number")
        if self.total_steps is None:
            raise ValueError(f"phase start {start} is a fraction of training: pass total_steps=")
        return int(math.floor(start * self.total_steps + 0.5))

    def _fresh_params(self) -> list[Any]:
        # torch.optim writes its defaults into group dicts, so every optimizer gets its own copies
        return [dict(g, params=list(g["params"])) if isinstance(g, Mapping) else g for g in self._params]

    def _build(self, i: int) -> Any:
        spec = self.phases[i].optimizer
        params = self._fresh_params()
        if isinstance(spec, (str, Method)):
            opt = make_optimizer(spec, params)
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], (str, Method)):
            opt = make_optimizer(spec[0], params, **dict(spec[1]))
        elif callable(spec):
            opt = spec(params)
        else:
            raise TypeError(
                f"phase {i} optimizer must be a method name, (name, hyperparameters) or a factory params -> optimizer, "
                f"got {spec!r}"
            )
        ours = {id(p) for g in params for p in (g["params"] if isinstance(g, Mapping) else [g])}
        theirs = {id(p) for g in opt.param_groups for p in g["params"]}
        if ours != theirs:
            raise ValueError(
                f"phase {i}'s optimizer does not optimize the schedule's parameters; "
                "its factory must build the optimizer on the params it is given"
            )
        if self._model is not None and isinstance(opt, RK2):
            opt.track_buffers(self._model)
        return opt

    def _name(self, i: int, opt: Any) -> str:
        p = self.phases[i]
        if p.name is not None:
            return p.name
        spec = p.optimizer
        if isinstance(spec, (str, Method)):
            return parse_option(Method, spec).value
        if isinstance(spec, tuple):
            return parse_option(Method, spec[0]).value
        return _optimizer_name(opt)

    # torch.optim-compatible surface -------------------------------------------------------------
    @property
    def wrapped(self) -> Any:
        """The current phase's optimizer."""
        return self.optimizer

    @property
    def name(self) -> str:
        """Name of the current phase's optimizer."""
        return self._name(self.phase, self.optimizer)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step of the current optimizer; switches afterwards if the next phase starts now.

        Args:
            closure: As for ``torch.optim`` (required when the current optimizer is :class:`RK2`).

        Returns:
            Whatever the current optimizer's ``step`` returns (the closure's loss).
        """
        loss = self.optimizer.step(closure)
        self.steps += 1
        nxt = self.phase + 1
        if nxt < self._live and self.steps >= self.switch_steps[nxt]:
            old = self._name(self.phase, self.optimizer)
            self.optimizer = self._build(nxt)
            self.phase = nxt
            new = self._name(nxt, self.optimizer)
            self._events.append({"event": "switch", "from": old, "to": new, "step": self.steps, "phase": nxt})
        return loss

    def pop_events(self) -> list[dict[str, Any]]:
        """Switch events since the last call (each reported once), JSON-compatible."""
        out, self._events = self._events, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint: phase, step count, pending events and the current optimizer's ``state_dict``."""
        return {
            "phase": self.phase,
            "steps": self.steps,
            "switch_steps": list(self.switch_steps),
            "events": copy.deepcopy(self._events),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a checkpoint made by :meth:`state_dict` (rebuilding the saved phase's optimizer).

        Raises:
            ValueError: If the checkpoint's switch steps differ from this schedule's.
        """
        saved = [int(s) for s in state_dict["switch_steps"]]
        if saved != list(self.switch_steps):
            raise ValueError(f"checkpoint has switch steps {saved}, this schedule {list(self.switch_steps)}")
        phase = int(state_dict["phase"])
        if phase != self.phase:
            self.optimizer = self._build(phase)
            self.phase = phase
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.steps = int(state_dict["steps"])
        self._events = copy.deepcopy(list(state_dict.get("events", [])))

    def __repr__(self) -> str:
        return f"SwitchSchedule(phase={self.phase}, steps={self.steps}, starts={self.switch_steps}, now={self.name!r})"
