"""Input validation: the one place where data, targets, weights and dtypes are checked and normalized.

Every public entry point that takes a model and data runs its inputs through these plain functions
(a :class:`~landscape.problem.Problem` on its first pass over the data), so bad input fails early with an
:class:`InputError` that names the argument, what was expected, what was given and the fix, instead of a
deep torch error or a silently wrong number.

Policy (one for the whole package):

* **dtype.** Inputs are cast to the model's floating dtype (that of its first floating parameter, else
  buffer, else float32). Integer and bool inputs (e.g. raw ``uint8`` pixels) are cast too, with a one-time
  :class:`InputWarning`, except for models with an ``nn.Embedding``/``nn.EmbeddingBag``, whose integer
  inputs are token ids and stay as they are. Complex inputs are refused.
* **targets.** For classification losses (cross-entropy, NLL) integer and bool class labels become
  ``int64``; labels of shape ``(N, 1)`` are squeezed to ``(N,)`` with a one-time :class:`InputWarning`
  (they are unambiguous, and refusing them would only make every user write ``y.squeeze(1)``); labels
  below 0 (other than the loss's ``ignore_index``) or at least the model's output width are refused,
  naming the smallest / largest label and the width. For regression losses (MSE, L1, Huber, BCE)
  targets are cast to the model dtype. For other (custom) losses floating targets are cast to the model
  dtype and integer ones are left alone.
* **emptiness.** Data without a single sample is refused.
* **input shapes.** When the model refuses a batch (a :class:`~landscape.problem.Problem`'s forward pass raises),
  :func:`explain_forward_error` names the layer the inputs do not fit, its expected shape and the inputs' shape,
  and a ``(y, X)`` pair given for ``(X, y)``; it runs only after a failure, never on a working forward.
* **non-finite values.** NaN or inf in inputs, targets, parameters or buffers is refused, naming the
  tensor (batch, parameter or snapshot), how many NaN and inf elements it holds and where the first is.

Checks cost O(data) once per call and never run per evaluated point; data that already passed
(:class:`ValidBatches`, :class:`ValidPair`, :class:`ValidatedLoader`) is not checked again.

Where it runs: :func:`~landscape.evaluate.points.evaluate_points` (so every line, plane and slice),
:func:`~landscape.analyze.distance.functional_distance` / ``distance_along_path`` (endpoints too),
:func:`~landscape.train.loop.evaluate_dataset`, :class:`~landscape.train.loop.Trainer` (tensor pairs once at
construction, batched data on its first pass), :func:`~landscape.analyze.saturation.measure_saturation`,
:class:`~landscape.curvature.hessian.HessianOperator`, :meth:`~landscape.analyze.pca.TrajectoryPCA.fit` (snapshots),
``tunnels.split_stats`` / ``SplitAccumulator.update`` / ``full_batch_objective`` / ``newton_flat``,
``persistence.PersistentTrainer`` and the fast persistent paths, and every :class:`~landscape.problem.Problem`
(through :class:`BatchChecker` on its first pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from torch import Tensor, nn

from landscape import _checks
from landscape._checks import InputError as InputError
from landscape._checks import InputTypeError as InputTypeError
from landscape._checks import InputWarning as InputWarning
from landscape._checks import LossKind as LossKind
from landscape._checks import check_finite as check_finite
from landscape._checks import check_labels as check_labels
from landscape._checks import check_model as check_model
from landscape._checks import check_operator as check_operator
from landscape._checks import check_vector as check_vector
from landscape._checks import describe_nonfinite as describe_nonfinite
from landscape._checks import floating_reference as floating_reference
from landscape._checks import loss_kind as loss_kind
from landscape._checks import match_regression_shape as match_regression_shape
from landscape._checks import model_dtype as model_dtype
from landscape._checks import normalize_inputs as normalize_inputs
from landscape._checks import normalize_targets as normalize_targets
from landscape._options import check_keywords, keyword_values, shows_keywords

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "BatchOptions",
    "BatchChecker",
    "ValidBatches",
    "ValidPair",
    "validate_batches",
    "iter_validated",
    "ValidatedLoader",
    "validate_pair",
    "validate_training_sets",
    "validate_problem",
    "is_tensor_pair",
    "explain_forward_error",
]
__all__ += _checks.__all__  # the tensor-level checks, re-exported by the imports above


# --------------------------------------------------------------------------- model
def _takes_integer_inputs(model: nn.Module) -> bool:
    # Token ids must stay integers; any model with an embedding table is taken to want them. A module that runs an
    # architecture it does not hold as a submodule (a mode-connecting curve's) says so in ``integer_inputs``.
    own = getattr(model, "integer_inputs", None)
    if isinstance(own, bool):
        return own
    return any(isinstance(m, nn.Embedding | nn.EmbeddingBag) for m in model.modules())


def _output_shape(model: nn.Module, x: Tensor) -> tuple[int, ...] | None:
    """Shape of the model's output per sample (without the batch axis), by the output rule; ``None`` if unknown."""
    from landscape.functional import hook_attributes, model_output
    from landscape.params import preserved_mode

    try:  # hook_attributes: a hook's attributes (an activation captured by the probe) do not stay on the model
        with torch.no_grad(), preserved_mode(model, False), hook_attributes(model):
            # two samples: a model that squeezes its output keeps the batch axis; the output rule, as the loss sees it
            out = model_output(model(x[:2]))
    except Exception:  # noqa: BLE001 - the caller's own forward will raise its error with full context
        return None
    return tuple(out.shape[1:]) if out.dim() >= 1 else None


def _expects(m: nn.Module, shape: tuple[int, ...], floating: bool) -> str | None:
    """The input shape a known layer ``m`` expects, when an input of ``shape`` does not fit it; else ``None``."""
    from torch.nn.modules.conv import _ConvNd

    dense = (nn.Linear, _ConvNd, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
    if isinstance(m, dense) and not floating:  # a mapping or multi-input batch keeps its integer tensors as given
        return "of a floating dtype, not integers (cast them: x.float(), scaled as the model expects)"
    if isinstance(m, nn.Linear) and (not shape or shape[-1] != m.in_features):
        return f"of shape (N, {m.in_features}) (any leading dimensions, {m.in_features} features last)"
    if isinstance(m, _ConvNd):
        d = len(m.kernel_size)
        if len(shape) not in (d + 1, d + 2) or shape[-d - 1] != m.in_channels:
            return f"of shape (N, {m.in_channels}, {('L', 'H, W', 'D, H, W')[d - 1]}) ({m.in_channels} channels)"
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and (len(shape) < 2 or shape[1] != m.num_features):
        return f"of shape (N, {m.num_features}, ...) ({m.num_features} channels)"
    if isinstance(m, nn.LayerNorm) and tuple(shape[-len(m.normalized_shape) :]) != tuple(m.normalized_shape):
        return f"of shape (N, ..., {', '.join(map(str, m.normalized_shape))})"
    if isinstance(m, nn.Embedding | nn.EmbeddingBag) and floating:
        return "of integer token ids, not floats"
    return None


def _pop(stack: list[Any]) -> None:
    stack.pop()  # returns None: a forward hook returning a value would replace the module's output


def explain_forward_error(
    model: nn.Module, inputs: tuple[Any, ...], kwargs: Mapping[str, Any], targets: Any, argname: str = "data"
) -> InputError | None:
    """After the model refused a batch: an :class:`InputError` naming the layer the inputs do not fit, or ``None``.

    Runs only once a forward pass has failed (no cost otherwise): the model is run again on two samples with a
    pre-hook on every module, and the innermost one left unfinished is the layer that raised. A known layer
    (``Linear``, convolutions, ``BatchNorm``, ``LayerNorm``, ``Embedding``) whose expected input shape the tensor
    it got does not have gives the message: the data's input shape, the layer's name and expected shape, and,
    when the targets would fit where the inputs do not, the likely slip of ``(y, X)`` for ``(X, y)``.

    Args:
        model: The network (run as it is, in eval mode, without gradients; its modes and attributes restored).
        inputs: The batch's positional inputs ``(N, ...)`` as the model was called with them.
        kwargs: Its keyword inputs.
        targets: The batch's targets (or ``None``).
        argname: The data's argument name.
    """
    from landscape.functional import hook_attributes
    from landscape.params import preserved_mode

    ref = floating_reference(model)

    def head(v: Any) -> Any:
        if not isinstance(v, Tensor):
            return v
        v = v[:2] if v.dim() else v
        return v.to(ref.dtype) if ref is not None and v.is_floating_point() else v

    args, kw = [head(v) for v in inputs], {k: head(v) for k, v in kwargs.items()}
    names = {m: n for n, m in model.named_modules()}
    stack: list[tuple[nn.Module, Any]] = []
    handles = [m.register_forward_pre_hook(lambda m, a: stack.append((m, a))) for m in names]
    handles += [m.register_forward_hook(lambda m, a, o: _pop(stack)) for m in names]
    try:
        with torch.no_grad(), preserved_mode(model, False), hook_attributes(model):
            model(*args, **kw)
        return None  # it runs on two samples: the error is not about the inputs' shape
    except Exception:  # noqa: BLE001 - the failure is what is explained; the caller raises the original otherwise
        pass
    finally:
        for h in handles:
            h.remove()
    if not stack or not stack[-1][1] or not isinstance(stack[-1][1][0], Tensor):
        return None
    layer, (got, *_) = stack[-1]
    want = _expects(layer, tuple(got.shape), got.is_floating_point())
    if want is None:
        return None
    data = next((v for v in (*inputs, *kwargs.values()) if isinstance(v, Tensor)), None)
    what = f"inputs of shape {tuple(data.shape)}" if data is not None else "inputs"
    kind = type(layer).__name__
    where = f"layer {names[layer]!r} ({kind})" if names[layer] else f"the model ({kind})"
    direct = any(got is a for a in args) or any(got is v for v in kw.values())
    if direct:
        msg = f"{argname}: the model cannot take {what}: {'its ' * bool(names[layer])}{where} expects inputs {want}"
    else:  # the inputs went through other layers first: the model's own shapes may be at fault as well
        msg = f"{argname}: {what} reach {where} as {tuple(got.shape[1:])} per sample, but it expects inputs {want}"
    if direct and isinstance(targets, Tensor) and targets.dim() >= 1:
        t = head(targets)
        if _expects(layer, tuple(t.shape), t.is_floating_point()) is None:
            msg += (
                f"; the targets (shape {tuple(targets.shape)}) would fit: were inputs and targets swapped? Give "
                "(X, y), inputs first"
            )
    return InputError(msg + ".")


# --------------------------------------------------------------------------- batches
class BatchOptions(TypedDict, total=False):
    """How batches are checked, by :class:`BatchChecker` and :func:`validate_batches` (all optional).

    Attributes:
        argname: The data's argument name, for messages (default ``"data"``).
        targets: ``False`` when the targets are not used (they are then passed through unchecked; default
            ``True``).
        dtype: Override the model's dtype.
        device: Move batches there (default: unchanged).
        n_classes: The output width for the label range check (default: probed on the first sample).
    """

    argname: str
    targets: bool
    dtype: torch.dtype | None
    device: torch.device | None
    n_classes: int | None


_BATCH_DEFAULTS: dict[str, Any] = {"argname": "data", "targets": True}


class BatchChecker:
    """Checks and normalizes the batches of one call, in order; :meth:`finish` refuses empty data.

    Args:
        model: The network (gives the dtype, device, embedding policy and output width).
        loss_fn: The loss (decides the target policy); ``None`` with ``targets=True``: cross-entropy for
            integer targets, MSE otherwise (the evaluation engine's default).
        **options: How batches are checked (:class:`BatchOptions`): ``argname``, ``targets``, ``dtype``,
            ``device``, ``n_classes``.
    """

    @shows_keywords(BatchOptions, _BATCH_DEFAULTS)
    def __init__(self, model: nn.Module | None, loss_fn: Any = None, **options: Unpack[BatchOptions]) -> None:
        o = keyword_values("BatchChecker", options, BatchOptions, _BATCH_DEFAULTS)
        self.model = model
        self.loss_fn = loss_fn
        self.argname: str = o["argname"]
        self.targets: bool = o["targets"]
        self.dtype: torch.dtype = o["dtype"] or (model_dtype(model) if model is not None else torch.float32)
        self.device: torch.device | None = o["device"]
        self.keep_integer = model is not None and _takes_integer_inputs(model)
        self.n_classes: int | None = o["n_classes"]
        self._out_shape: tuple[int, ...] | None | bool = False  # False: not probed yet
        self.n_samples = 0
        self.n_batches = 0
        self.kind: LossKind | None = None
        self.ignore_index: int | None = None

    def _where(self, index: int | None, single: bool) -> str:
        return self.argname if single or index is None else f"{self.argname} (batch {index})"

    def __call__(
        self, x: Tensor, y: Tensor | None, index: int | None = None, single: bool = False, *, check: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Check and normalize one batch ``(x, y)`` (``y=None``: inputs only).

        ``check=False`` normalizes alone (casts, label squeezing, regression shapes): the NaN/inf and label-range
        checks are skipped, so data a caller vouches for gives the same batches as checked data.
        """
        where = self._where(index, single)
        if not isinstance(x, Tensor):
            raise InputTypeError(f"{where}: inputs must be a tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[0] == 0:
            # An empty batch reaches deep reshape errors (or a 0/0 mean) in every consumer: refuse it here.
            raise InputError(f"{where} holds no samples (inputs of shape {tuple(x.shape)}); expected at least one")
        if (  # (y, X) for (X, y): integer "inputs" of one value per sample, floating multi-valued "targets"
            isinstance(y, Tensor)
            and not self.keep_integer
            and x.dim() == 1
            and not x.is_floating_point()
            and y.is_floating_point()
            and y.dim() >= 2
            and y[0].numel() > 1
        ):
            raise InputError(
                f"{where}: the inputs are {str(x.dtype)[6:]} of shape {tuple(x.shape)} and the targets "
                f"{str(y.dtype)[6:]} of shape {tuple(y.shape)}: are X and y swapped? Pass (X, y), the inputs first"
            )
        x = normalize_inputs(x, self.dtype, argname=where, keep_integer=self.keep_integer, device=self.device)
        if check:
            check_finite(x, f"{where}: inputs", "Drop or impute those samples.")
        if y is not None:
            if self.kind is None and self.targets:
                if self.loss_fn is None:
                    self.kind, self.ignore_index = loss_kind("mse" if y.is_floating_point() else "cross_entropy")
                else:
                    self.kind, self.ignore_index = loss_kind(self.loss_fn)
            y = normalize_targets(y, self.dtype, self.kind if self.targets else None, argname=where, device=self.device)
            if self.targets:
                if check:
                    check_finite(y, f"{where}: targets", "Drop or impute those samples.")
                if self.kind is LossKind.CLASSIFICATION and not y.is_floating_point():
                    if check:
                        out = self._out(x)
                        if out is not None and len(out) == 1 and y.dim() == 2 and y.shape[1] > 1:
                            # torch: "Expected floating point type for target with class probabilities, got Long"
                            raise InputError(
                                f"{where}: integer targets of shape {tuple(y.shape)} for outputs of shape "
                                f"{(int(x.shape[0]), *out)} (one-hot labels?); a classification loss takes class "
                                "indices of shape (N,) (y.argmax(1)) or class probabilities as floats (y.float())"
                            )
                        n_classes = self.n_classes or (out[0] if out else None)
                        if n_classes is not None:
                            check_labels(y, n_classes, argname=where, ignore_index=self.ignore_index, out_shape=out)
                elif self.kind is LossKind.REGRESSION and (out := self._out(x)) is not None:
                    y = match_regression_shape(y, out, where)
                    if check and y.shape[1:].numel() != torch.Size(out).numel():
                        # torch's own error is about tensor sizes (or a broadcast loss, with a warning); say which
                        # targets and outputs, and the usual slip: class labels given as floats
                        f = self.loss_fn
                        name = repr(f) if isinstance(f, str) else getattr(f, "__name__", None) or type(f).__name__
                        why = "float targets chose MSE" if self.loss_fn is None else f"loss {name}"
                        if self.loss_fn is None or (y.dim() == 1 and len(out) == 1 and out[0] > 1):
                            why += "; class labels must be integers (y.long())"
                        raise InputError(
                            f"{where}: targets of shape {tuple(y.shape)} cannot be compared with the model's outputs "
                            f"of shape {(int(x.shape[0]), *out)} ({why}); give targets shaped like the outputs"
                        )
        self.n_samples += int(x.shape[0])
        self.n_batches += 1
        return x, y

    def _out(self, x: Tensor) -> tuple[int, ...] | None:
        """The output shape per sample, probed once (two samples through the model in eval mode, no grad)."""
        if self._out_shape is False:
            self._out_shape = None if self.model is None else _output_shape(self.model, x)
        return self._out_shape  # type: ignore[return-value]

    def recast_inputs(self, x: Tensor) -> Tensor:
        """Inputs of a later pass cast as :meth:`__call__` cast the first pass's (no checks, no notes)."""
        if x.is_floating_point() or not self.keep_integer:
            return x.to(device=self.device, dtype=self.dtype)
        return x if self.device is None else x.to(self.device)

    def recast_targets(self, y: Tensor) -> Tensor:
        """Targets of a later pass normalized as this checker normalized the first pass's (no checks, casts only)."""
        if self.kind is LossKind.CLASSIFICATION and not y.is_floating_point():
            return (y[:, 0] if y.dim() == 2 and y.shape[1] == 1 else y).long()
        if self.kind is LossKind.REGRESSION or y.is_floating_point():
            y = y.to(self.dtype)
            if self.kind is LossKind.REGRESSION and isinstance(self._out_shape, tuple):
                y = match_regression_shape(y, self._out_shape, "", note=False)
        return y

    def finish(self) -> None:
        """Refuse data that held no sample.

        Raises:
            InputError: Naming the argument.
        """
        if self.n_samples == 0:
            got = "no batch" if self.n_batches == 0 else f"{self.n_batches} empty batch(es)"
            raise InputError(f"{self.argname} holds no samples (got {got}); expected at least one (X, y) sample")


class ValidPair(tuple):
    """A tensor pair ``(X, y)`` that already passed :class:`BatchChecker` (re-batched but not checked again)."""

    dtype: torch.dtype


class ValidBatches(list):
    """A list of ``(X, y)`` batches that already passed :class:`BatchChecker` for one dtype (not checked again)."""

    dtype: torch.dtype
    n_samples: int
    targets_checked: bool


def _check_iterable(data: Any, argname: str) -> None:
    """Refuse data that is neither a tensor pair nor an iterable of batches (a bare tensor, a number)."""
    if isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise InputTypeError(
            f"{argname} must be a tensor pair (X, y) or an iterable of (X, y) batches, got {type(data).__name__}"
        )


def _pairs(data: Any, argname: str) -> Iterator[tuple[Tensor, Tensor]]:
    from landscape.data.batches import iterate_batches

    _check_iterable(data, argname)
    return iterate_batches(data)


def is_tensor_pair(data: Any) -> bool:
    """Is ``data`` a tensor pair ``(X, y)`` (a tuple or list of two tensors)?"""
    return isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)


@shows_keywords(BatchOptions, _BATCH_DEFAULTS)
def validate_batches(
    data: Any, model: nn.Module | None, loss_fn: Any = None, **options: Unpack[BatchOptions]
) -> ValidBatches:
    """Read all of ``data`` once into checked, normalized batches (for analyzers that keep the data).

    Args:
        data: A tensor pair ``(X, y)`` or an iterable of ``(X, y)`` batches (a :class:`ValidBatches` of the
            same dtype is returned as is).
        model: The network (dtype, device, output width); ``None`` with ``dtype`` given.
        loss_fn: As for :class:`BatchChecker`.
        **options: How batches are checked (:class:`BatchOptions`): ``argname``, ``targets``, ``dtype``,
            ``device``, ``n_classes``.

    Returns:
        The batches (a pair stays one batch).

    Raises:
        InputError: On empty data, NaN/inf, bad labels; :class:`InputTypeError` on data of the wrong kind.
    """
    check_keywords("validate_batches", options, BatchOptions)
    check = BatchChecker(model, loss_fn, **options)
    want, device, targets = check.dtype, check.device, check.targets
    if isinstance(data, ValidBatches) and data.dtype == want and (data.targets_checked or not targets):
        if device is None or all(x.device == device for x, _ in data):
            return data
    single = is_tensor_pair(data)
    out = ValidBatches(check(x, y, i, single) for i, (x, y) in enumerate(_pairs(data, check.argname)))
    check.finish()
    out.dtype, out.n_samples, out.targets_checked = want, check.n_samples, targets
    return out


def iter_validated(
    data: Any,
    model: nn.Module | None,
    loss_fn: Any = None,
    *,
    argname: str = "data",
    batch_size: int | None = None,
    targets: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Stream checked, normalized batches (for analyzers that pass over the data once); refuses empty data at the end.

    ``batch_size`` splits a tensor pair. Otherwise as :func:`validate_batches`.
    """
    from landscape.data.batches import iterate_batches

    want = dtype or (model_dtype(model) if model is not None else torch.float32)
    if isinstance(data, ValidPair) and data.dtype == want and device is None:
        yield from iterate_batches(data, batch_size)
        return
    if isinstance(data, ValidatedLoader) and data.checker.dtype == want and device is None:
        yield from data  # checks itself on its first pass, only casts afterwards
        return
    if is_tensor_pair(data):  # checked whole, so messages give indices into the caller's tensors
        (pair,) = validate_batches(data, model, loss_fn, argname=argname, targets=targets, dtype=want, device=device)
        yield from iterate_batches(pair, batch_size)
        return
    check = BatchChecker(model, loss_fn, argname=argname, targets=targets, dtype=want, device=device)
    for i, (x, y) in enumerate(_pairs(data, argname)):
        yield check(x, y, i)  # type: ignore[misc]
    check.finish()


class ValidatedLoader:
    """A re-iterable view of batched data (a ``DataLoader``) checked on its first pass, cast on every pass.

    For trainers that re-iterate data every epoch: the full checks (NaN/inf, labels) run once over the
    first pass; later passes only cast to the model's dtype (a dtype comparison per batch).

    Args:
        data: An iterable of ``(X, y)`` batches.
        model: The network.
        loss_fn: The loss.
        argname: The data's argument name.
    """

    def __init__(
        self, data: Iterable[tuple[Tensor, Tensor]], model: nn.Module, loss_fn: Any = None, *, argname: str = "data"
    ) -> None:
        self.data = data
        self.checker = BatchChecker(model, loss_fn, argname=argname)
        self.checked = False

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if not self.checked:
            for i, (x, y) in enumerate(_pairs(self.data, self.checker.argname)):
                yield self.checker(x, y, i)  # type: ignore[misc]
            self.checker.finish()
            self.checked = True
            return
        c = self.checker
        for x, y in self.data:
            yield c.recast_inputs(x), c.recast_targets(y)


def validate_pair(data: Any, model: nn.Module, loss_fn: Any = None, *, argname: str = "data") -> Any:
    """A tensor pair checked and normalized once; an iterable of batches wrapped in a :class:`ValidatedLoader`.

    For trainers, which keep the data and re-iterate it. Raises as :func:`validate_batches`.
    """
    if isinstance(data, ValidPair | ValidatedLoader):
        return data
    if is_tensor_pair(data):
        ((x, y),) = validate_batches(data, model, loss_fn, argname=argname)
        out = ValidPair((x, y))
        out.dtype = x.dtype if x.is_floating_point() else model_dtype(model)
        return out
    _check_iterable(data, argname)
    return ValidatedLoader(data, model, loss_fn, argname=argname)


def validate_training_sets(
    model: nn.Module, data: Any, eval_data: Mapping[str, Any] | None, loss_fn: Any = None
) -> tuple[Any, dict[str, Any]]:
    """A trainer's check before its loop: the model's weights, then :func:`validate_pair` on every data set.

    Args:
        model: The network; NaN/inf in any parameter or buffer is refused by name.
        data: The training data, a tensor pair or an iterable of batches (errors name it ``data``).
        eval_data: Named evaluation sets, or ``None`` (errors name each ``eval_data['name']``); a one-shot
            iterator (a generator) is read into a list, since every epoch end evaluates it.
        loss_fn: The loss (target policy).

    Returns:
        The training data and a new ``{name: set}`` dict (in the order given), each as :func:`validate_pair`
        returns it.
    """
    check_model(model)
    data = validate_pair(data, model, loss_fn, argname="data")
    # An evaluation set is read at every epoch end: a one-shot iterator is kept (as a Problem keeps one), or the
    # second evaluation found it exhausted.
    evals = {
        k: validate_pair(list(d) if isinstance(d, Iterator) else d, model, loss_fn, argname=f"eval_data[{k!r}]")
        for k, d in (eval_data or {}).items()
    }
    return data, evals


def validate_problem(
    model: nn.Module, data: Any, loss_fn: Any = None, *, argname: str = "data", dtype: torch.dtype | None = None
) -> ValidBatches:
    """Check the model's weights and read ``data`` into checked batches: the whole check of ``(model, data, loss)``.

    Args:
        model: The network; NaN/inf in any parameter or buffer is refused by name.
        data: A tensor pair or an iterable of batches.
        loss_fn: The loss (target policy).
        argname: The data's argument name.
        dtype: Cast inputs to this dtype instead of the model's (a compute dtype chosen by the caller).

    Returns:
        The batches, as :func:`validate_batches`.
    """
    check_model(model)
    return validate_batches(data, model, loss_fn, argname=argname, dtype=dtype)
