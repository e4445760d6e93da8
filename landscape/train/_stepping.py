"""How the loop steps an optimizer: ``optimizer.step(closure)``, or the closure then ``step()`` where that is the same.

A stock torch optimizer's ``step(closure)`` evaluates the closure once, under ``torch.enable_grad()``, before its
update, which never reads the closure again. When grad mode is already on and no step pre-hook is registered (a
pre-hook would run before the closure there, after it here), calling the closure and then ``step()`` computes the
same gradients and the same update bitwise, without entering and leaving grad mode (about 6,000 instructions a step
under callgrind, 0.5% of the digits-MLP step). Anything else (RK2 and the package's other wrappers, LBFGS, a
subclass that overrides ``step``, an instance whose ``step`` was replaced other than by an LR scheduler's counter)
is stepped as ``step(closure)``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

# torch optimizers whose step(closure) is `with torch.enable_grad(): loss = closure()` and then the update alone
_CLOSURE_ONCE = (
    "SGD", "Adam", "AdamW", "Adadelta", "Adagrad", "Adamax", "ASGD", "NAdam", "RAdam", "RMSprop", "Rprop", "SparseAdam",
)  # fmt: skip


def closure_first(optimizer: Any) -> bool:
    """Whether ``optimizer`` may be stepped as ``closure()`` then ``step()`` (see the module docstring).

    Read once per optimizer; the loop checks the per-step conditions (grad mode on, ``global_pre_hooks()`` and the
    optimizer's own ``_optimizer_step_pre_hooks`` empty).
    """
    stock = tuple(c for c in (getattr(torch.optim, n, None) for n in _CLOSURE_ONCE) if isinstance(c, type))
    owner = next((c for c in type(optimizer).__mro__ if "step" in vars(c)), None)  # who defines the step it runs
    if owner not in stock or not isinstance(getattr(optimizer, "_optimizer_step_pre_hooks", None), dict):
        return False
    own = vars(optimizer).get("step")  # an instance's own step: only an LR scheduler's call counter is transparent
    return own is None or bool(getattr(own, "_wrapped_by_lr_sched", False))


def global_pre_hooks() -> Any:
    """The registry of torch's global step pre-hooks (a dict; truthy, never empty, when it cannot be read)."""
    module = sys.modules.get("torch.optim.optimizer")
    return getattr(module, "_global_optimizer_pre_hooks", True)


def tracking(optimizer: Any, model: torch.nn.Module) -> Any:
    """The optimizer, told ``model``'s buffers when it evaluates twice a step (RK2: they must advance once)."""
    track = getattr(optimizer, "track_buffers", None)
    if callable(track):
        track(model)
    return optimizer
