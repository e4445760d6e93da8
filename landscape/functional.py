"""The model at a point: BatchNorm policy, the functional model, differentiable kernels and the output rule.

One home for how the package runs a model at parameters other than its own, without modifying it:

* **BatchNorm policy** (:class:`BNMode`): ``"eval"`` uses the running statistics; ``"train"`` uses each
  batch's statistics (running buffers are never written: they go to private copies), Dropout always off;
  ``"interpolate"`` (the evaluation engine only) uses per-point buffers ``sum_k c_k B_k`` of affine points
  between models (Li et al.'s "states"); ``"recompute"`` (the evaluation engine only) recomputes each point's
  running statistics from data first (:mod:`landscape.evaluate._bnstats`, as ``swa_utils.update_bn``). A
  :class:`~landscape.problem.Problem` takes ``"eval"`` or ``"train"``.
* **The functional model** (:class:`FunctionalModel`): the model evaluated through
  :func:`torch.func.functional_call` at given parameters and buffers, in the mode the policy says; the
  model's own train/eval flags are restored after every call.
* **Differentiable kernels** (:func:`differentiable_kernels`): second-order products select the math
  scaled-dot-product-attention kernel, whose backward is differentiable.
* **The output rule** (:func:`model_output`): which tensor of what the model returns the loss and metrics see.
"""

from __future__ import annotations

import contextlib
import copy
import enum
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "BNMode",
    "FunctionalModel",
    "eval_copy",
    "hook_attributes",
    "model_modes",
    "differentiable_kernels",
    "model_output",
    "torch_threads",
]

KERNEL_NOTE = "second-order products ran with the math SDPA kernel (differentiable); the caller's settings restored"
"""What a problem's provenance notes say after second-order products ran under :func:`differentiable_kernels`."""

_BATCH_NORM = nn.modules.batchnorm._BatchNorm  # the base class of BatchNorm1d/2d/3d (and SyncBatchNorm)


class BNMode(str, enum.Enum):
    """BatchNorm policy: running statistics, batch statistics, interpolated buffers, or statistics recomputed."""

    EVAL = "eval"
    TRAIN = "train"
    INTERPOLATE = "interpolate"
    RECOMPUTE = "recompute"


@contextlib.contextmanager
def model_modes(model: nn.Module, bn_train: bool) -> Iterator[None]:
    """Inside the block every module is in eval mode, BatchNorm in train mode when ``bn_train``; restored after."""
    with _modes_and_hooks(model, bn_train, hooks=False):
        yield


@contextlib.contextmanager
def hook_attributes(model: nn.Module) -> Iterator[None]:
    """Inside the block, modules with forward hooks may set attributes; after it they hold exactly the old ones.

    ``torch.nn.utils.weight_norm``'s pre-hook sets ``module.weight`` from the parameters on every call, and a hook
    capturing activations adds an attribute: run at another point, they would leave the caller's module holding
    that point's tensors (and their graphs). Attributes set are put back, attributes added removed (a shallow
    restore: an object an attribute holds, mutated in place, stays mutated).
    """
    with _modes_and_hooks(model, None, hooks=True):
        yield


@contextlib.contextmanager
def _modes_and_hooks(model: nn.Module, bn_train: bool | None, hooks: bool, tensors: bool = False) -> Iterator[None]:
    """:func:`model_modes` (unless ``bn_train`` is ``None``) and, if ``hooks``, :func:`hook_attributes` in one walk.

    With ``tensors``, every module's registered parameters and buffers are put back after the block as well:
    ``torch.func.functional_call`` leaves a module that appears at two paths (one ``nn.Linear`` applied twice)
    holding the point's tensors, since it restores the second path's swap (the point's tensor) after the first's
    (the original; torch 2.13).

    Only the flags that differ from the mode asked for are written, and only flags that differ from the caller's
    are written back: a model already in the mode, as an evaluated model usually is, is not written at all
    (``nn.Module.__setattr__`` is slow, and :class:`FunctionalModel` walks the model on every call). The hooked
    modules' attributes are saved after the flags are set, so restoring them leaves the flags to be restored
    last, as nesting ``model_modes`` outside ``hook_attributes`` does.
    """
    mods = list(model.modules())
    flags = [m.training for m in mods]
    saved: list[tuple[nn.Module, dict[str, Any]]] = []
    stores: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if tensors:
        stores = [(d, dict(d)) for m in mods for d in (m._parameters, m._buffers) if d]
    try:
        if bn_train is not None:
            for m, t in zip(mods, flags):
                want = bn_train and isinstance(m, _BATCH_NORM)
                if t != want:
                    m.training = want
        if hooks:
            saved = [(m, dict(vars(m))) for m in mods if m._forward_pre_hooks or m._forward_hooks]
        yield
    finally:
        for m, attrs in saved:
            for k in vars(m).keys() - attrs.keys():
                del m.__dict__[k]
            m.__dict__.update(attrs)
        for d, own in stores:
            if d.keys() != own.keys() or any(d[k] is not v for k, v in own.items()):
                d.clear()
                d.update(own)  # the caller's own tensors, in their order
        if bn_train is not None:
            for m, t in zip(mods, flags):
                if m.training is not t:  # changed here (or by the forward): the caller's own flag put back
                    m.training = t


def eval_copy(model: nn.Module, bn_train: bool = False) -> nn.Module:
    """A deep copy in eval mode (its BatchNorm layers in train mode when ``bn_train``), for private use."""
    m = copy.deepcopy(model).eval()
    if bn_train:
        for sub in m.modules():
            if isinstance(sub, _BATCH_NORM):
                sub.train()
    return m


class FunctionalModel:
    """The model evaluated at given parameters: call it like the model; other attributes are the model's.

    Runs :func:`torch.func.functional_call` with the point's parameters and private buffers, in eval mode
    (BatchNorm in train mode when ``bn_train``; Dropout always off). The model's flags are restored after.
    """

    def __init__(self, model: nn.Module, tensors: dict[str, Tensor], bn_train: bool = False) -> None:
        self.__dict__["_fm"] = (model, tensors, bn_train)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        model, tensors, bn_train = self.__dict__["_fm"]
        with _modes_and_hooks(model, bn_train, hooks=True, tensors=True):
            return torch.func.functional_call(model, tensors, args, kwargs, strict=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_fm"][0], name)


@contextlib.contextmanager
def differentiable_kernels() -> Iterator[None]:
    """Select kernels whose backward is differentiable (math scaled-dot-product attention) inside the block.

    The fused CPU flash-attention kernel has no double backward (``derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented``); the math kernel
    computes the same function with plain differentiable ops. The caller's backend choice is restored on
    exit (``torch.nn.attention.sdpa_kernel`` saves and restores it).
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # a torch without the attention module has no fused SDPA kernels either
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


class _PlainBatchNorm(TorchFunctionMode):
    """Batch-statistics BatchNorm as mean, variance and arithmetic, without the running-statistics update.

    ``torch.func.hessian`` (``jacfwd(jacrev(f))``, as ``jacrev(jacrev(f))``) of a loss through a train-mode
    ``F.batch_norm`` was off by ~0.2 (entries up to ~4) without an error (torch 2.13; functorch's batching of
    its backward under ``vmap``), while ``jacfwd(grad(f))`` and double backward agreed to 1e-15. The same
    function as plain ops composes with every transform. The update of the running statistics changes
    nothing a batch-statistics loss returns, and the functional call's buffers are private copies.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not nn.functional.batch_norm:
            return func(*args, **kwargs)
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        a = {**dict(zip(names, args)), **kwargs}
        if not (a.get("training", False) or a.get("running_mean") is None):
            return func(*args, **kwargs)  # running statistics: no batch statistics to rewrite
        x = a["input"]
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        y = (x - mean) / torch.sqrt(var + a.get("eps", 1e-5))
        if a.get("weight") is not None:
            y = y * a["weight"].reshape(shape)
        if a.get("bias") is not None:
            y = y + a["bias"].reshape(shape)
        return y


def plain_batch_norm() -> TorchFunctionMode:
    """A context in which batch-statistics BatchNorm runs as plain ops (see :class:`_PlainBatchNorm`)."""
    return _PlainBatchNorm()


def model_output(out: Any) -> Tensor:
    """The tensor a loss ``(outputs, targets)`` and the metrics see: the documented output rule.

    A tensor is returned as is; an object with a ``logits`` attribute or key (Hugging Face ``ModelOutput``)
    gives its logits; another mapping its first non-``None`` value; a tuple or list its first element.

    Raises:
        TypeError: If no tensor can be found.
    """
    if isinstance(out, Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, Mapping):
        for v in out.values():
            if v is not None:
                return model_output(v)
    if isinstance(out, tuple | list) and out:
        return model_output(out[0])
    raise TypeError(
        f"cannot find the output tensor in a {type(out).__name__}; return a tensor, a tuple (first element), "
        "an object with .logits, or pass a closure loss(model, batch)"
    )


@contextlib.contextmanager
def torch_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: unchanged), restoring the old count after.

    Small models run no faster on two threads, and several times slower when the cores are shared with other
    work; the gallery runs every figure on one, the batched persistent engine on its ``threads`` setting.
    """
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
