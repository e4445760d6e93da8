"""Neuron saturation: streamed activation histograms and percentiles (Persistent Neurons §5, Fig. 14-15).

The Persistent Neurons paper (after Glorot & Bengio 2010, Fig. 3) follows "98 percentiles of the
distribution of the activation values" of each tanh layer over training (Fig. 14) and shows
normalized activation histograms at chosen epochs (Fig. 15). Reading taken here: the percentile is of
the *raw* activation values (``value="raw"``, the default), as in Glorot & Bengio, where a layer's
98th percentile climbing to 1 means its units sit on the upper asymptote; ``value="abs"`` measures
``|activation|`` instead, which also counts units saturated at -1.

Activations are captured with forward hooks and never all kept: each layer feeds a
:class:`~landscape.analyze.histogram.StreamingHistogram` on a fixed range (tanh: [-1, 1]), whose percentiles
are bracketed within one bin (exact while at most ``exact_limit`` values have been seen). The results are in
:mod:`landscape.analyze.saturation_results`, the training callback in :mod:`landscape.analyze.saturation_recorder`.

Capture never changes the model: hooks are removed and train/eval modes restored, also on error.
"""

from __future__ import annotations

import builtins
import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape._options import parse_option
from landscape.analyze.histogram import StreamingHistogram
from landscape.analyze.saturation_results import ActivationValue, SaturationStats
from landscape.functional import FunctionalModel, hook_attributes
from landscape.params import preserved_mode
from landscape.validation import BatchChecker, check_model, explain_forward_error

__all__ = ["measure_saturation", "HISTOGRAM_RANGES"]

LayerSpec = str | type[nn.Module]
RangeLike = tuple[float, float] | Mapping[str, tuple[float, float]] | None

# Natural histogram range of bounded activations, by module type (dispatch registry).
HISTOGRAM_RANGES: dict[type[nn.Module], Callable[[nn.Module], tuple[float, float]]] = {
    nn.Tanh: lambda m: (-1.0, 1.0),
    nn.Softsign: lambda m: (-1.0, 1.0),
    nn.Sigmoid: lambda m: (0.0, 1.0),
    nn.Hardsigmoid: lambda m: (0.0, 1.0),
    # also ReLU6; ignore: nn.Module.__getattr__ is typed Tensor | Module, Hardtanh's bounds are floats
    nn.Hardtanh: lambda m: (float(m.min_val), float(m.max_val)),  # type: ignore[arg-type]
}


# --------------------------------------------------------------------------- capture
def _refuse_no_layers(layers: Any) -> None:
    """Refuse an empty ``layers`` sequence: it measured nothing and returned ``{}``, read as "nothing saturates"."""
    if isinstance(layers, Sequence) and not isinstance(layers, str) and len(layers) == 0:
        raise ValueError(
            "layers is empty: pass module names and/or module types to measure, e.g. layers=nn.Tanh (the default: "
            "every Tanh of the model) or layers=['0', '2']"
        )


def _select_layers(model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]) -> list[tuple[str, nn.Module]]:
    named = dict(model.named_modules())
    if isinstance(layers, nn.Module):  # list(nn.Tanh()) raised "'Tanh' object is not iterable"
        kind, mine = type(layers).__name__, [k for k, m in named.items() if m is layers and k]
        raise TypeError(
            f"layers got a {kind} instance; pass a module type, nn.{kind} (every {kind} of the model)"
            + (f", or the module's name {mine[0]!r}" if mine else ", or module names")
        )
    specs = [layers] if isinstance(layers, str | type) else list(layers)
    _refuse_no_layers(specs)
    chosen: dict[str, nn.Module] = {}
    for spec in specs:
        if isinstance(spec, str):
            if spec not in named:
                kinds = {type(m).__name__.lower(): type(m).__name__ for m in named.values()}
                kind = kinds.get(spec.lower())  # a type's name given as a module's ('tanh')
                hint = f"; for every {kind} pass the type nn.{kind}" if kind else ""
                raise KeyError(f"model has no module {spec!r}; modules: {[k for k in named if k][:40]}{hint}")
            chosen[spec] = named[spec]
        elif isinstance(spec, type) and issubclass(spec, nn.Module):
            hits = {k: m for k, m in named.items() if isinstance(m, spec) and k}
            if not hits:
                types = sorted({type(m).__name__ for m in named.values()})
                raise ValueError(f"model has no {spec.__name__} module; its module types are {types}")
            chosen.update(hits)
        else:
            raise TypeError(f"layers must be module names or nn.Module types, got {spec!r}")
    order = list(named)
    return sorted(chosen.items(), key=lambda kv: order.index(kv[0]))


def _range_for(name: str, module: nn.Module, rng: RangeLike, value: ActivationValue) -> tuple[float, float]:
    if isinstance(rng, Mapping):
        r = rng.get(name)
    else:
        r = rng
    if r is None:
        for typ, fn in HISTOGRAM_RANGES.items():
            if isinstance(module, typ):
                r = fn(module)
                break
        else:
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__}, whose output range is not known; pass range=(lo, hi) "
                f"(or a dict by layer name). Known ranges: {[t.__name__ for t in HISTOGRAM_RANGES]}"
            )
    lo, hi = float(r[0]), float(r[1])
    if value is ActivationValue.ABS:
        lo, hi = (lo, hi) if lo >= 0 else ((-hi, -lo) if hi <= 0 else (0.0, max(-lo, hi)))
    return lo, hi


def _iter_inputs(data: Tensor | np.ndarray, batch_size: int | None) -> Iterator[Tensor]:
    """Batches of the shorthand's input tensor ``X (N, ...)`` (other data is read through a Problem)."""
    x = torch.as_tensor(data)
    step = batch_size or x.shape[0]
    for i in builtins.range(0, x.shape[0], step):  # ``range`` is measure_saturation's histogram range here
        yield x[i : i + step]


def _outputs_only(outputs: Any, targets: Any) -> Tensor:
    """The loss of the problem that reads the shorthand's data: never called for a value, it checks no label."""
    return torch.zeros(())


def measure_saturation(
    model: Any,
    data: Any = None,
    layers: LayerSpec | Sequence[LayerSpec] = nn.Tanh,
    *,
    percentiles: Sequence[float] = (98.0,),
    value: ActivationValue | str = ActivationValue.RAW,
    bins: int = 100,
    range: RangeLike = None,  # numpy's name for a histogram range
    exact_limit: int = 65536,
    batch_size: int | None = 1024,
    train: bool = False,
    progress: bool = False,
) -> dict[str, SaturationStats]:
    """Histogram and percentiles of chosen layers' activations over a dataset, streamed.

    Args:
        model: A :class:`~landscape.problem.Problem` (its model run on its batches, any form: several
            inputs, mapping batches; under a closure loss the closure runs the model, Dropout off), or the
            network (only run forward; hooks are removed and modes restored afterwards) with ``data``.
        data: With a network: inputs ``X (N, ...)``, or the data as every analyzer takes it (a pair ``(X, y)`` or
            ``(*inputs, y)`` of tensors or numpy arrays, a ``Dataset``, a ``DataLoader``, or an iterable of batches
            ``(*inputs, y)``, ``X`` or mappings, their entries passed to the model by name, the labels left out).
        layers: Module names and/or module types (default: every ``nn.Tanh``). A module called several
            times per forward gives one layer per call, named ``"name#0"``, ``"name#1"``, ...
        percentiles: Percentile levels (Persistent Neurons Fig. 14: 98).
        value: ``"raw"`` activations (default, Glorot & Bengio 2010) or ``"abs"`` magnitudes.
        bins: Histogram bins over the range.
        range: ``(lo, hi)`` for all layers or a dict by layer name; default by type from
            :data:`HISTOGRAM_RANGES` (tanh: ``(-1, 1)``; with ``value="abs"``, ``(0, 1)``).
        exact_limit: Per layer, keep up to this many values for exact percentiles (0: histogram only).
        batch_size: Batch size for tensor data (``None``: one batch) and a ``Dataset`` (``None``: 64).
        train: Run in train mode (batch statistics, dropout) instead of eval mode; running statistics are
            then updated in private copies, never in the model's buffers.
        progress: Show a tqdm bar over batches.

    Returns:
        ``{layer: SaturationStats}`` in forward order. Percentile error bound: ``|values - exact| <=
        upper - lower <= (hi - lo) / bins`` whenever the percentile falls inside the range.

    Raises:
        KeyError: For an unknown layer name.
        ValueError: If ``layers`` is empty, no module matches, a range is unknown, or a layer never ran.
        InputError: On empty data, NaN/inf in the inputs or weights (inputs are cast to the model's dtype,
            see :mod:`landscape.validation`), or inputs of a shape the model cannot take (naming the layer).
    """
    from landscape.problem import Problem

    val = parse_option(ActivationValue, value, "value")
    levels = [float(q) for q in percentiles] if isinstance(percentiles, Sequence) else []
    if levels and all(0 < q < 1 for q in levels):  # fractions on numpy's 0-100 scale: (0.98,) was the 0.98th
        warnings.warn(
            f"percentiles are on the 0-100 scale; {tuple(levels)} are all below 1 (the {levels[0]:g}th percentile "
            f"is near the bottom); for the 98th percentile pass percentiles=(98,)",
            UserWarning,
            stacklevel=2,
        )
    prob = None
    if isinstance(model, Problem):
        if data is not None:
            raise TypeError("model is a Problem, which holds its data; do not pass data")
        prob, model = model, model.compute_model()
    elif data is None:
        raise TypeError("data is missing: pass a landscape.Problem, or the model with data")
    elif not isinstance(data, Tensor | np.ndarray):
        # Read as every analyzer reads data: (*inputs, y) tuples with all their inputs, a Dataset batched (its
        # samples one by one reached the model without a batch axis), mapping batches. Only inputs matter here.
        check_model(model)  # first: a model and its data swapped is said plainly
        prob = Problem(model, data, _outputs_only, loss_form="outputs", batch_size=batch_size)
        model = prob.compute_model()
    check_model(model)
    checker = BatchChecker(model, argname="data", targets=False)
    chosen = _select_layers(model, layers)
    ranges = {name: _range_for(name, m, range, val) for name, m in chosen}
    hists: dict[tuple[str, int], StreamingHistogram] = {}
    calls: dict[str, int] = {}

    def reset(*_: Any) -> None:
        calls.clear()

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if not isinstance(out, Tensor):
                raise TypeError(f"layer {name!r} returned a {type(out).__name__}; only tensor outputs can be captured")
            k = calls.get(name, 0)
            calls[name] = k + 1
            key = (name, k)
            if key not in hists:
                hists[key] = StreamingHistogram(*ranges[name], bins, exact_limit=exact_limit)
            hists[key].update(out.abs() if val is ActivationValue.ABS else out)

        return hook

    # A problem checks its data on the first pass, with a 2-sample forward to learn the output shape: take the
    # first batch before the hooks go on, so that probe is not counted as data.
    batches = None if prob is None else iter(prob.batches())
    first = None if batches is None else next(batches, None)
    handles = [model.register_forward_pre_hook(reset)]
    refused: tuple[Any, RuntimeError] | None = None  # (inputs, kwargs, targets) the model could not take, and why
    try:
        handles += [m.register_forward_hook(hook_for(name)) for name, m in chosen]
        # Train mode updates BatchNorm running statistics in place: run on private copies of the
        # buffers (one copy per call, not per batch) so the caller's model is never written.
        bufs = {k: v.clone() for k, v in model.named_buffers()} if train else {}
        with torch.no_grad(), preserved_mode(model, train), hook_attributes(model):  # hooks' attributes put back
            if prob is not None:  # batches already checked and cast by the problem
                rest = itertools.chain(() if first is None else (first,), batches or ())
                for b in tqdm(rest, disable=not progress, desc="activations", leave=False):
                    if prob.closure:  # only the closure knows how its batches call the model
                        prob.batch_terms(FunctionalModel(model, bufs, train), b)
                    else:
                        try:
                            torch.func.functional_call(model, bufs, b.inputs, b.kwargs, strict=False)
                        except RuntimeError as e:
                            refused = ((b.inputs, b.kwargs, b.targets), e)
                            break
                    checker.n_samples += b.size
            else:
                for i, x in enumerate(
                    tqdm(_iter_inputs(data, batch_size), disable=not progress, desc="activations", leave=False)
                ):
                    xs = (checker(x, None, i)[0],)  # cast to the model's dtype, NaN/inf inputs refused
                    try:
                        torch.func.functional_call(model, bufs, xs, {}, strict=False)
                    except RuntimeError as e:
                        refused = ((xs, {}, None), e)
                        break
    finally:
        for h in handles:
            h.remove()
    if refused is not None:  # named once the hooks are off (the explanation runs the model again)
        raise explain_forward_error(model, *refused[0]) or refused[1]
    checker.finish()
    missing = [name for name, _ in chosen if (name, 0) not in hists]
    if missing:
        raise ValueError(f"layers {missing} never ran in the forward pass (or the data set is empty)")
    per_module = {name: sum(1 for n, _ in hists if n == name) for name, _ in chosen}
    out: dict[str, SaturationStats] = {}
    for name, k in hists:  # insertion order = order of first call in the forward pass
        label = name if per_module[name] == 1 else f"{name}#{k}"
        out[label] = hists[(name, k)].stats(label, percentiles, val)
    bad = {k: s.nonfinite for k, s in out.items() if s.nonfinite}
    if bad:
        warnings.warn(
            f"non-finite activations (NaN or inf) in layers {bad} (counts), left out of the statistics; each "
            "layer's SaturationStats.nonfinite holds its count. The inputs and weights are finite: an overflow?",
            RuntimeWarning,
            stacklevel=2,
        )
    return out
