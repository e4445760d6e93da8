"""No public function writes the caller's model (issue 17, item 3).

The functions walked are not a hand list: they are every public callable of ``landscape``,
``persistence`` and ``tunnels`` (each package's ``__all__`` and the ``__all__`` of each of their
modules) that takes a model, found with :func:`inspect.signature`: a parameter named ``model``/``net``
or annotated with ``nn.Module``, a ``PointLike`` (a model or a vector) or a ``HessianOperator`` (which
holds the model). Classes count through their constructor and their public methods. Each is called
with a BatchNorm + Dropout model in train mode (with forward, pre-forward and backward hooks), and
then the state dict (every parameter and buffer, ``num_batches_tracked`` too, bitwise), every
``requires_grad``, ``.grad``, every module's ``.training``, the hook dicts, every module's attributes (a
forward hook sets one) and the identity of every module and parameter of every model passed must be unchanged.

Arguments are built by parameter name (:data:`ARGS`); :data:`CALLS` adds per-function options (small
sizes, the variants worth running, such as ``train=True``). A new public function that takes a model
is walked automatically when its required arguments have builders; otherwise
:func:`test_every_public_function_taking_a_model_is_walked` fails until it gets an entry in
:data:`CALLS` or a reason in :data:`SKIP`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

PACKAGES = ("landscape", "persistence", "tunnels")

# Public callables that take a model but are not walked, each with the reason.
SKIP: dict[str, str] = {
    "landscape.Trainer.replace_model": "hands the given model over to the trainer, which trains it in place from "
    "then on (documented; used by callbacks with a model they just built)",
    "landscape.Recorder.begin": "walked through the constructor (Recorder(model=...) calls it); the instance the "
    "walk builds has begun, and a second begin refuses by design",
    "landscape.models.init_weights": "documented as the one function that writes into a model: it initializes a "
    "freshly built model in place",
}

# Parameters that carry a model (by name; annotations are matched by _MODEL_ANNOTATION).
_MODEL_NAMES = {"model", "net", "template", "factory_or_model", "model_or_layout"}
_MODEL_ANNOTATION = re.compile(r"\bModule\b|\bPointLike\b|\bHessianOperator\b")


# --------------------------------------------------------------------------- the models and data
def _bn_dropout_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    m.train()
    with torch.no_grad():  # non-trivial running statistics, so a write shows
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 1.5)
        m[1].num_batches_tracked.fill_(7)
    return m


def _mlp(seed: int) -> nn.Module:
    """The plain ReLU MLP that persistence's fast path accepts."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 1)).double().train()


def _noop_hook(*_: Any) -> None:
    return None


def _capture_hook(mod: nn.Module, inputs: Any, out: Any) -> None:
    mod.captured = out  # a hook keeping an activation: run at another point, it must not stay on the model


def _with_hooks(m: nn.Module) -> nn.Module:
    m.register_forward_hook(_noop_hook)
    m.register_forward_pre_hook(_noop_hook)
    m[0].register_forward_hook(_capture_hook)
    m[-1].register_full_backward_hook(_noop_hook)
    return m


@dataclasses.dataclass
class Ctx:
    """Fresh models and data for one call."""

    model: nn.Module
    other: nn.Module
    third: nn.Module
    fourth: nn.Module
    mlp: nn.Module
    bn: nn.Module
    forward_hooks_only: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    xr: torch.Tensor
    yr: torch.Tensor
    extra: list[nn.Module] = dataclasses.field(default_factory=list)

    @classmethod
    def make(cls) -> Ctx:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(12, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (12,), generator=g)
        xr = torch.linspace(-1, 1, 10, dtype=torch.float64)[:, None]
        torch.manual_seed(8)
        bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double().train()
        fwd = _bn_dropout_model(9)
        fwd.register_forward_hook(_noop_hook)
        models = [_with_hooks(_bn_dropout_model(s)) for s in range(4)]
        return cls(*models, _with_hooks(_mlp(5)), _with_hooks(bn), fwd, X, y, xr, torch.sin(3 * xr))

    def grown(self) -> tuple[nn.Module, Any]:
        """A model grown by a tunnel event from ``model``, and the event (built once, then checked too)."""
        if not self.extra:
            from tunnels import open_tunnels

            big, event = open_tunnels(self.model, 1, t=0.5, data=self.data, loss_fn=F.cross_entropy, seed=0)
            self.extra.append(big)
            self._event = event
        return self.extra[0], self._event

    @property
    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.X, self.y)

    def models(self) -> list[nn.Module]:
        return [
            self.model,
            self.other,
            self.third,
            self.fourth,
            self.mlp,
            self.bn,
            self.forward_hooks_only,
            *self.extra,
        ]

    def mlp_vectors(self) -> torch.Tensor:
        from landscape.params import parameters_to_vector

        return parameters_to_vector(self.mlp)[None]

    def vec(self, scale: float = 0.1) -> torch.Tensor:
        from landscape.params import parameters_to_vector

        v = parameters_to_vector(self.model)
        return v + scale * torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=v.dtype)


class Lazy:
    """An argument computed from the context at call time."""

    def __init__(self, fn: Callable[[Ctx], Any]) -> None:
        self.fn = fn


def _hessian_op(c: Ctx) -> Any:
    from landscape.curvature import HessianOperator

    return HessianOperator(c.model, F.cross_entropy, c.data)


def _event(c: Ctx) -> Any:
    from tunnels import open_tunnels

    return open_tunnels(c.model, 1, t=0.5, data=c.data, loss_fn=F.cross_entropy, seed=0)[1]


def _site(c: Ctx) -> Any:
    from tunnels import find_sites

    return find_sites(c.model)[0]


# Argument builders by parameter name (used for required parameters; CALLS can override any argument).
ARGS: dict[str, Callable[[Ctx], Any]] = {
    "model": lambda c: c.model,
    "problem": lambda c: c.model,  # the shorthand (model, data): data is built below although it defaults to None
    "tensors": lambda c: dict(c.model.named_parameters()),
    "net": lambda c: c.model,
    "template": lambda c: c.model,
    "factory_or_model": lambda c: c.model,
    "model_or_layout": lambda c: c.model,
    "origin": lambda c: c.model,
    "a": lambda c: c.model,
    "b": lambda c: c.other,
    "others": lambda c: c.other,
    "minimum": lambda c: c.model,
    "center": lambda c: c.model,
    "p0": lambda c: c.model,
    "p1": lambda c: c.other,
    "p2": lambda c: c.third,
    "corners": lambda c: [c.model, c.other, c.third, c.fourth],
    "data": lambda c: c.data,
    "batch": lambda c: c.data,
    "args": lambda c: (c.X,),
    "loss_fn": lambda c: F.cross_entropy,
    "params": lambda c: c.vec(),
    "vec": lambda c: c.vec(),
    "v": lambda c: c.vec(),
    "V": lambda c: torch.stack([c.vec(), c.vec(0.2)], 1),
    "points": lambda c: torch.stack([c.vec(), c.vec(0.2)]),
    "direction": lambda c: c.vec(),
    "d1": lambda c: c.vec(),
    "d2": lambda c: c.vec(0.3),
    "xs": lambda c: [0.0, 1.0],
    "ys": lambda c: [0.0, 1.0],
    "op": _hessian_op,
    "event": _event,
    "site": _site,
    "i": lambda c: 0,
    "iteration": lambda c: 0,
    "index": lambda c: 0,
    "spec": lambda c: __import__("landscape").permutation_spec(c.model),
    "perm": lambda c: __import__("landscape").random_permutation(
        __import__("landscape").permutation_spec(c.model), seed=1
    ),
    "target": lambda c: c.other,
    "alpha": lambda c: 0.5,
    "curve": lambda c: __import__("landscape").fit_curve(c.model, c.other, c.data, steps=0),
}

_TINY = {"alphas": [0.0, 0.5, 1.0]}
_BN_MODES = [{"bn_mode": "eval"}, {"bn_mode": "train"}]
_FIT = {"epochs": 1, "batch_size": 6}
_PERSIST = {
    "iterations": 2,
    "lam": 0.01,
    "optimizer": "sgd",
    "epochs": 1,
    "batch_size": 6,
    "eval_data": Lazy(lambda c: {"val": c.data}),
}

# A Problem's method at its own point on its first batch.
_AT_BATCH = {"fm": Lazy(lambda c: _problem(c).functional()), "batch": Lazy(lambda c: _first_batch(c))}

# Per-function options: a list of variants, each a dict of keyword (or, for positional-only use,
# named) arguments merged over the builders; Lazy values are built from the context.
CALLS: dict[str, list[dict[str, Any]]] = {
    "landscape.functional_forward": [{"train": None}, {"train": True}, {"train": False}],
    "landscape.measure_saturation": [{"train": True}, {"train": False}],
    "landscape.evaluate_points": [{"bn_mode": m, "strategy": s} for m in ("eval", "train") for s in ("auto", "loop")],
    "landscape.Problem.batch_terms": [_AT_BATCH],
    "landscape.Problem.outputs": [_AT_BATCH],
    "landscape.Problem.loss_terms": [  # its first batch's outputs, by the functional model (which writes nothing)
        {
            "out": Lazy(lambda c: _problem(c).outputs(_problem(c).functional(), _first_batch(c))),
            "targets": Lazy(lambda c: _problem(c).targets_of(_first_batch(c))),
            "size": Lazy(lambda c: _first_batch(c).size),
        }
    ],
    "landscape.Problem.targets_of": [{"batch": Lazy(lambda c: _first_batch(c))}],
    "landscape.functional.hook_attributes": [{"__with__": True}],
    "landscape.functional.model_modes": [{"bn_train": t, "__with__": True} for t in (False, True)],
    "landscape.validation.BatchChecker.recast_inputs": [{"x": Lazy(lambda c: c.X)}],
    "landscape.validation.BatchChecker.recast_targets": [{"y": Lazy(lambda c: c.y)}],
    "landscape.validation.validate_training_sets": [{"eval_data": Lazy(lambda c: {"val": c.data})}],
    # a batch the model takes (nothing to explain), and one whose inputs no layer fits (the model re-run with hooks)
    "landscape.validation.explain_forward_error": [
        {"inputs": Lazy(lambda c: (c.X,)), "kwargs": {}, "targets": Lazy(lambda c: c.y)},
        {"inputs": Lazy(lambda c: (c.X[:, :2],)), "kwargs": {}, "targets": Lazy(lambda c: c.y)},
    ],
    "landscape._batch.BatchReader": [
        {
            "loss": None,
            "closure": False,
            "dtype": torch.float64,
            "device": torch.device("cpu"),
            "batch_size": 6,
            "memory_budget": 1 << 20,
            "validate": True,
            "shard": "none",
        }
    ],
    "landscape.Problem.loss_fn_for": [{"targets": Lazy(lambda c: c.y)}],
    "landscape._weights.ModelWeights": [  # float32 for the float64 model: compute_model builds its cast copy
        {
            "layout": Lazy(lambda c: __import__("landscape").ParamLayout.from_model(c.model)),
            "dtype": torch.float32,
            "device": torch.device("cpu"),
        }
    ],
    "landscape._weights.ModelWeights.functional": [
        {"theta": Lazy(lambda c: c.vec()), "bn_train": t} for t in (False, True)
    ],
    "landscape._weights.compute_placement": [{"dtype": None, "device": None}],
    "landscape.Problem.reduce_sums": [{"sums": Lazy(lambda c: [torch.ones(2, dtype=torch.float64)])}],
    "landscape.line": [{**_TINY, **m} for m in (*_BN_MODES, {"bn_mode": "interpolate"})],
    "landscape.line_distance": [
        {"reference": Lazy(lambda c: c.other), "distances": [0.0, 1.0], **m}
        for m in (*_BN_MODES, {"bn_mode": "interpolate"})
    ],
    "landscape.bilinear": [{"n": 2, **m} for m in (*_BN_MODES, {"bn_mode": "interpolate"})],
    "landscape.barycentric": [{"n": 2, **m} for m in (*_BN_MODES, {"bn_mode": "interpolate"})],
    "landscape.plane": [{"center": Lazy(lambda c: c.model), **m} for m in _BN_MODES],
    "landscape.random_plane": [{"xs": [0.0, 1.0], **m} for m in _BN_MODES] + [{"xs": [0.0], "params": "trainable"}],
    "landscape.plane_through": [{"xs": [0.0, 1.0], **m} for m in (*_BN_MODES, {"bn_mode": "interpolate"})],
    "landscape.functional_distance": [dict(m) for m in (*_BN_MODES, {"bn_mode": "interpolate"})],
    "landscape.distance_along_path": [{**_TINY, **m} for m in (*_BN_MODES, {"bn_mode": "interpolate"})],
    "landscape.normalize_direction": [{"reference": Lazy(lambda c: c.vec()), "layout": Lazy(lambda c: c.model)}],
    "landscape.random_direction": [{}, {"params": "trainable"}],
    "landscape.random_directions": [{}, {"params": "trainable", "normalization": "model"}],
    "landscape.directions_from_models": [{}, {"params": "trainable"}],
    "landscape.Recorder": [{"model": Lazy(lambda c: c.model), "every_steps": 1}],
    "landscape.Recorder.add_event": [{"event": {"type": "test"}}],
    "landscape.Recorder.fail": [{"error": RuntimeError("test")}],
    "landscape.Trainer": [_FIT],
    "landscape.fit": [_FIT],
    "landscape.Trainer.add_event": [{"event": {"type": "test"}}],
    "landscape.factory.load_weights": [{"weights": Lazy(lambda c: dict(c.other.state_dict()))}],
    "landscape.factory.check_factory": [{"factory": "tests_pkg.nets:bn_dropout"}],
    "landscape.HessianOperator": [{"micro_batch_size": None}, {"bn_mode": "train", "micro_batch_size": None}],
    "landscape.hessian_spectrum": [
        {"steps": 3, "n_probes": 1, "top_k": 1},
        {"steps": 3, "n_probes": 1, "top_k": 1, "bn_mode": "train"},
    ],
    "landscape.hessian_eigenpairs": [{"k": 1, "max_steps": 4}],
    "landscape.hessian_directions": [{"k": 1}],
    "landscape.hessian_trace": [{"n_products": 3}],
    "landscape.curvature.spectrum_of": [{"n_probes": 1, "steps": 3, "top_k": 1}],
    "landscape.trajectory_curvature": [
        {
            "trajectory": Lazy(lambda c: _trajectory(c)),
            "k": 2,
            "per_layer": True,
            "trace_products": 3,
            "progress": False,
        }
    ],
    "landscape.gradient_descent_curvature": [{"lr": 0.1, "steps": 2, "every_steps": 1, "progress": False}],
    "landscape.worst_case_sharpness": [
        {"radius": 0.1, "steps": 2, "norm": n, "adaptive": a} for n, a in (("l2", "none"), ("linf", "filter"))
    ],
    "landscape.average_sharpness": [{"radius": 0.1, "n_samples": 3, "adaptive": "elementwise"}],
    "landscape.m_sharpness": [{"m": 6, "radius": 0.1, "steps": 1, "progress": False}],
    "landscape.make_loss_at": [{"__call__": Lazy(lambda c: torch.stack([c.vec(), c.vec(0.2)]))}],
    "landscape.train.evaluate_dataset": [{"loss_fn": F.cross_entropy}],
    "landscape.params.preserved_mode": [{"train": True, "__with__": True}, {"train": False, "__with__": True}],
    "landscape.Trajectory.model_at": [{"i": 0}],
    "persistence.PersistentTrainer": [_PERSIST],
    "persistence.fast_persistent_run": [
        {
            "model": Lazy(lambda c: c.mlp),
            "x": Lazy(lambda c: c.xr),
            "y": Lazy(lambda c: c.yr),
            "iterations": 2,
            "steps": 3,
            "lam": 0.01,
            "backend": "eager",
        }
    ],
    "persistence.mlp_loss_and_grad": [
        {
            "model": Lazy(lambda c: c.mlp),
            "x": Lazy(lambda c: c.xr),
            "y": Lazy(lambda c: c.yr),
            "vectors": Lazy(lambda c: c.mlp_vectors()),
        }
    ],
    "persistence.mlp_widths": [{"model": Lazy(lambda c: c.mlp)}],
    "persistence.train_seeds_batched": [
        {
            "model": Lazy(lambda c: c.mlp),
            "x": Lazy(lambda c: c.xr),
            "y": Lazy(lambda c: c.yr),
            "initial": [0, 1],
            "steps": 3,
            "backend": "eager",
        }
    ],
    "persistence.FastPersistentResult.model": [{"template": Lazy(lambda c: c.mlp)}],
    "persistence.FastPersistentResult.champion_model": [{"template": Lazy(lambda c: c.mlp)}],
    "persistence.FastPersistentResult.trajectory": [{"template": Lazy(lambda c: c.mlp)}],
    "persistence.SeedsResult.model": [{"template": Lazy(lambda c: c.mlp)}],
    "landscape.apply_permutation": [{}, {"target": Lazy(lambda c: c.vec()), "layout": Lazy(lambda c: c.model)}],
    "landscape.fit_curve": [{"steps": 2, "batch_size": 6}, {"steps": 2, "kind": "polychain"}],
    "landscape.evaluate_curve": [{"ts": [0.0, 0.5, 1.0], **m} for m in _BN_MODES],
    "landscape.loss_barrier": [{**_TINY, **m} for m in (*_BN_MODES, {"bn_mode": "interpolate"})]
    + [{**_TINY, "repair": True}],
    "landscape.activation_correlations": [{"batch_size": 5}, {"train": True}],
    "landscape.activation_matching": [{"batch_size": 5}],
    "landscape.repair": [{"alpha": 0.3, "batch_size": 5}],
    "landscape.AlignmentResult.apply": [{}],
    "tunnels.full_batch_objective": [{"__call__": Lazy(lambda c: c.vec())}],
    # torch.func transforms cannot differentiate through a full backward hook (a torch limitation):
    # the model without one
    "tunnels.newton_flat": [{"steps": 1, "model": Lazy(lambda c: c.forward_hooks_only)}],
    "tunnels.close_tunnels": [{"model": Lazy(lambda c: c.grown()[0]), "event": Lazy(lambda c: c.grown()[1])}],
    "tunnels.open_tunnels": [{"units": 1, "data": Lazy(lambda c: c.data), "loss_fn": F.cross_entropy, "seed": 0}],
    "tunnels.open_units": [{"units": [0], "lambdas": Lazy(lambda c: torch.tensor([[0.5, 0.5, 0.5]]))}],
    "tunnels.close_units": [{"pairs": [(0, 1)]}],
    "tunnels.reorganize": [{"data": Lazy(lambda c: c.data), "loss_fn": F.cross_entropy, "seed": 0}],
    "tunnels.reorganize_units": [
        {"merges": [(0, 1)], "units": [2], "lambdas": Lazy(lambda c: torch.tensor([[0.5, 0.5, 0.5]]))}
    ],
    "tunnels.resolve_site": [{"producer": "0"}],
    # train=True refuses Dropout between the layers (a clear ValueError): run it on the BN model without one
    "tunnels.split_matrices": [{"train": False}, {"train": True, "model": Lazy(lambda c: c.bn)}],
    "tunnels.split_stats": [{"train": False}, {"train": True, "model": Lazy(lambda c: c.bn)}],
    "tunnels.SplitAccumulator.update": [{"batch": Lazy(lambda c: c.data)}],
}

# Instances for classes whose constructor takes no model but a method does.
INSTANCES: dict[str, Callable[[Ctx], Any]] = {
    "landscape.Trajectory": lambda c: _trajectory(c),
    "landscape.train.RK2": lambda c: __import__("landscape").train.RK2(torch.optim.SGD([torch.zeros(2)], lr=0.1)),
    "landscape.train.SwitchSchedule": lambda c: __import__("landscape").train.SwitchSchedule(
        [torch.zeros(2)], [(0, "sgd")]
    ),
    "landscape.validation.BatchChecker": lambda c: _checked_once(c),
    "landscape.AlignmentResult": lambda c: __import__("landscape").weight_matching(_bn_dropout_model(7), c.other),
    "tunnels.SplitAccumulator": lambda c: __import__("tunnels").SplitAccumulator(F.cross_entropy),
    "persistence.FastPersistentResult": lambda c: __import__("persistence").fast_persistent_run(
        _mlp(6), c.xr, c.yr, iterations=2, steps=2, lam=0.01, backend="eager"
    ),
    "persistence.SeedsResult": lambda c: __import__("persistence").train_seeds_batched(
        _mlp(6), c.xr, c.yr, [0], steps=2, backend="eager"
    ),
}


def _problem(c: Ctx) -> Any:
    return __import__("landscape").Problem(c.model, c.data)


def _first_batch(c: Ctx) -> Any:
    return next(iter(_problem(c).batches()))


def _checked_once(c: Ctx) -> Any:
    from landscape.validation import BatchChecker

    checker = BatchChecker(c.model, F.cross_entropy)
    checker(c.X, c.y)  # finish() refuses a checker that saw no sample
    return checker


def _trajectory(c: Ctx) -> Any:
    from landscape.trajectory import Trajectory

    t = Trajectory()
    t.append_model(_bn_dropout_model(9))  # a snapshot of another network of the same architecture
    return t


# --------------------------------------------------------------------------- discovery
def _public_objects() -> Iterator[tuple[str, Any]]:
    """(qualified name, object) for each entry of every package's and module's ``__all__``, deduplicated."""
    seen: set[int] = set()
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        modules = [pkg] + [importlib.import_module(f"{pkg_name}.{i.name}") for i in pkgutil.iter_modules(pkg.__path__)]
        for mod in modules:
            prefix = pkg_name if mod is pkg else mod.__name__
            for name in getattr(mod, "__all__", ()):
                obj = getattr(mod, name)
                if id(obj) in seen or not callable(obj):
                    continue
                seen.add(id(obj))
                yield f"{prefix}.{name}", obj


def _model_params(fn: Callable[..., Any]) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [
        p.name for p in sig.parameters.values() if p.name in _MODEL_NAMES or _MODEL_ANNOTATION.search(str(p.annotation))
    ]


def _public_methods(cls: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("_") and member.__module__.split(".")[0] in PACKAGES:
            yield name, member


def walked() -> list[tuple[str, str | None, Callable[..., Any]]]:
    """Every public callable taking a model (or a method of a class built from one): (key, class key, fn)."""
    out = []
    for key, obj in _public_objects():
        if inspect.isclass(obj):
            if issubclass(obj, BaseException) or issubclass(obj, __import__("enum").Enum):
                continue
            holds_model = bool(_model_params(obj))
            if holds_model:
                out.append((key, None, obj))
            for name, meth in _public_methods(obj):
                if holds_model or _model_params(meth):
                    out.append((f"{key}.{name}", key, meth))
        elif _model_params(obj):
            out.append((key, None, obj))
    return out


# --------------------------------------------------------------------------- calling
def _value(v: Any, c: Ctx) -> Any:
    return v.fn(c) if isinstance(v, Lazy) else v


def _prepare(fn: Callable[..., Any], c: Ctx, options: dict[str, Any]) -> Callable[[], Any]:
    """Build the arguments now (they may run package code on fresh objects) and return the call."""
    options = dict(options)
    call_result = options.pop("__call__", None)
    as_context = options.pop("__with__", False)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in options:
            v = _value(options.pop(p.name), c)
        elif p.name in ("data", "loss_fn") and p.default is None:  # None where a Problem may come first
            v = ARGS[p.name](c)
        elif p.kind is p.VAR_KEYWORD or (p.default is not p.empty and p.kind is not p.VAR_POSITIONAL):
            continue
        elif p.name in ARGS:
            v = ARGS[p.name](c)
        else:
            raise LookupError(f"no builder for parameter {p.name!r}: add it to ARGS or give it in CALLS")
        if p.kind is p.VAR_POSITIONAL:
            args.extend(v if isinstance(v, tuple | list) else [v])
        elif p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = v
        else:
            args.append(v)
    kwargs.update({k: _value(v, c) for k, v in options.items()})  # into **kwargs
    result_arg = None if call_result is None else _value(call_result, c)

    def run() -> Any:
        if as_context:
            with fn(*args, **kwargs):
                return None
        out = fn(*args, **kwargs)
        return out if result_arg is None else out(result_arg)  # e.g. the objective a factory returned

    return run


def _instance(cls_key: str, cls: type, method: str, c: Ctx) -> Any:
    if cls_key in INSTANCES:
        return INSTANCES[cls_key](c)
    inst = _prepare(cls, c, CALLS.get(cls_key, [{}])[0])()
    if method != "fit" and callable(getattr(inst, "fit", None)):
        inst.fit()  # e.g. champion_model needs a fitted trainer
    return inst


# --------------------------------------------------------------------------- what must not change
def _hook_dicts(m: nn.Module) -> tuple[Any, ...]:
    return tuple(
        tuple(getattr(m, a).keys())
        for a in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    )


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything about a model a public function must leave alone."""
    return {
        "state": {k: (v.detach().clone(), v.dtype, v.device) for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {k: _hook_dicts(m) for k, m in model.named_modules()},
        "attrs": {k: dict(vars(m)) for k, m in model.named_modules()},  # held: their ids cannot be reused
        "modules": [(k, id(m)) for k, m in model.named_modules()],
        "parameters": [(k, id(p)) for k, p in model.named_parameters()],
        "buffers": [(k, id(b)) for k, b in model.named_buffers()],
    }


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bytes of a tensor (bitwise comparison: -0.0 differs from 0.0, a NaN equals itself)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_unchanged(model: nn.Module, snap: dict[str, Any], what: str) -> None:
    now = snapshot(model)
    assert now["modules"] == snap["modules"], f"{what}: modules replaced"
    assert now["parameters"] == snap["parameters"], f"{what}: parameters replaced"
    assert now["buffers"] == snap["buffers"], f"{what}: buffers replaced"
    assert now["state"].keys() == snap["state"].keys(), f"{what}: state dict keys changed"
    for k, (v, dtype, device) in snap["state"].items():
        w, wdtype, wdevice = now["state"][k]
        assert (wdtype, wdevice) == (dtype, device), f"{what}: {k} changed dtype/device"
        assert torch.equal(_bits(w), _bits(v)), f"{what}: {k} changed"
    assert now["requires_grad"] == snap["requires_grad"], f"{what}: requires_grad changed"
    for k, g in snap["grad"].items():
        h = now["grad"][k]
        assert (g is None) == (h is None) and (g is None or torch.equal(g, h)), f"{what}: {k}.grad changed"
    assert now["training"] == snap["training"], f"{what}: train/eval mode changed"
    assert now["hooks"] == snap["hooks"], f"{what}: hooks added or removed"
    ids = {k: {a: id(v) for a, v in d.items()} for k, d in snap["attrs"].items()}
    assert {k: {a: id(v) for a, v in d.items()} for k, d in now["attrs"].items()} == ids, f"{what}: attributes set"


# --------------------------------------------------------------------------- the tests
WALKED = walked()


def _cases() -> Iterator[Any]:
    for key, cls_key, fn in WALKED:
        if key in SKIP:
            continue
        for i, options in enumerate(CALLS.get(key, [{}])):
            yield pytest.param(key, cls_key, fn, options, id=f"{key}[{i}]")


# Entry points that refuse a model with frozen parameters, with a ValueError saying so (by design).
REFUSE_FROZEN = {
    "persistence.fast_persistent_run",
    "persistence.mlp_loss_and_grad",
    "persistence.mlp_widths",
    "persistence.train_seeds_batched",
}


@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "half-frozen"])
@pytest.mark.parametrize(("key", "cls_key", "fn", "options"), list(_cases()))
def test_public_function_leaves_the_models_untouched(key, cls_key, fn, options, frozen):
    c = Ctx.make()
    if frozen:  # a frozen layer as fine-tuning leaves it: still analyzed, and the flags must survive
        for m in c.models():
            m[0].requires_grad_(False)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cls_key is not None:
            cls = getattr(importlib.import_module(fn.__module__), fn.__qualname__.split(".")[0])
            fn = getattr(_instance(cls_key, cls, fn.__name__, c), fn.__name__)  # the instance's own case checks it
        run = _prepare(fn, c, options)
        snaps = [snapshot(m) for m in c.models()]
        if frozen and key in REFUSE_FROZEN:
            with pytest.raises(ValueError, match="trainable"):
                run()
        else:
            run()
    for i, (m, s) in enumerate(zip(c.models(), snaps)):
        assert_unchanged(m, s, f"{key} with {options} (model {i})")


def test_every_public_function_taking_a_model_is_walked():
    """A new public function taking a model needs builders for its arguments, a CALLS entry or a SKIP reason."""
    keys = {k for k, _, _ in WALKED}
    assert len(keys) >= 60, f"only {len(keys)} public callables taking a model found: is discovery broken?"
    for expected in (
        "landscape.functional_forward",
        "landscape.measure_saturation",
        "landscape.line",
        "landscape.HessianOperator.matvec",
        "persistence.PersistentTrainer",
        "tunnels.split_stats",
        "landscape.make_loss_at",
        "landscape.Trajectory.append_model",
    ):
        assert expected in keys, expected
    stale = sorted((set(CALLS) | set(SKIP)) - keys - set(INSTANCES))
    assert not stale, f"CALLS/SKIP name callables that are not public or take no model: {stale}"
    missing = []
    for key, cls_key, fn in WALKED:
        if key in SKIP:
            continue
        if cls_key is not None and cls_key not in INSTANCES and cls_key not in keys:
            missing.append((key, f"an instance of {cls_key} (add a builder to INSTANCES)"))
        if key in CALLS:
            continue
        sig = inspect.signature(fn)
        required = [
            p.name
            for p in list(sig.parameters.values())[1 if p_is_method(fn) else 0 :]
            if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if any(r not in ARGS for r in required):
            missing.append((key, [r for r in required if r not in ARGS]))
    assert not missing, (
        "public callables taking a model that the walk cannot call; add argument builders to ARGS, options to CALLS, "
        f"or a reason to SKIP: {missing}"
    )


def p_is_method(fn: Callable[..., Any]) -> bool:
    return "." in fn.__qualname__ and not inspect.isclass(fn)


# --------------------------------------------------------------------------- the issue's two repros
def test_functional_forward_train_none_keeps_running_statistics():
    from landscape import functional_forward, parameters_to_vector

    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = functional_forward(m, parameters_to_vector(m), torch.randn(8, 3), train=None)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert m.training and m[1].training
    # train=None still ran in train mode: batch statistics (outputs standardized per feature)
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-5)


def test_measure_saturation_train_keeps_running_statistics():
    import copy

    from landscape import measure_saturation

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh()).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(16, 3)
    stats = measure_saturation(m, x, train=True, batch_size=8)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():  # train mode really was used: batch statistics, batch by batch
        ref = copy.deepcopy(m)
        want = torch.cat([ref(x[:8]), ref(x[8:])]).double()
    assert stats["2"].count == 16 * 4
    assert abs(stats["2"].mean - float(want.mean())) < 1e-6
