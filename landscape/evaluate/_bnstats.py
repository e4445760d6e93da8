"""BatchNorm statistics recomputed at every parameter point (``bn_mode="recompute"``).

A network interpolated between two BatchNorm networks, or moved along a direction, no longer matches
either network's running statistics; its hidden units' variance collapses and the loss on the old
statistics overstates the barrier (Jordan et al., *REPAIR*, ICLR 2023, §3: "RESET"). The usual remedy
(Garipov et al. 2018 for mode-connecting curves, Izmailov et al. 2018 for SWA, Ainsworth et al. 2023 for
interpolations) is to recompute the statistics at the point and then evaluate on them. This module does
that the way :func:`torch.optim.swa_utils.update_bn` does: every tracked BatchNorm layer starts from
reset statistics, takes ``momentum=None`` (a cumulative average of the batches' statistics), and sees
every statistics batch once in train mode (Dropout off); the point is then evaluated in eval mode on
the result. With the statistics data in one batch these are the data's exact mean and unbiased variance.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from landscape._checks import check_finite, normalize_inputs
from landscape.functional import _BATCH_NORM
from landscape.params import ParamLayout
from landscape.validation import _takes_integer_inputs

__all__ = ["StatisticsPass", "statistics_inputs"]


def statistics_inputs(model: nn.Module, data: Any, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """The input batches of ``bn_data``: a tensor of inputs, an ``(X, y)`` pair (one batch), or batches.

    Args:
        model: The architecture (integer inputs stay integers for a model with an embedding).
        data: An input tensor ``(N, ...)``, a pair ``(X, y)`` of tensors with one leading size (one batch,
            so the statistics are the data's own), or an iterable of batches: tensors, or tuples/lists
            whose first entry is the input (as a ``DataLoader`` yields them).
        dtype: The model's floating dtype (inputs are cast to it, as the evaluated data are).
        device: The model's device.

    Returns:
        The input batches, in order.

    Raises:
        TypeError: On a batch that is neither a tensor nor a tuple/list starting with one.
        ValueError: If there is no batch, or a batch is empty.
        InputError: If a batch holds NaN or inf.
    """
    if isinstance(data, Tensor):
        batches: list[Any] = [data]
    elif (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
        and data[0].dim() > 0
        and data[1].dim() > 0
        and data[0].shape[0] == data[1].shape[0]
    ):
        batches = [data[0]]
    elif isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
        batches = list(data)
    else:
        raise TypeError(
            f"bn_data must be an input tensor, an (X, y) pair or an iterable of batches, got {type(data).__name__}"
        )
    keep = _takes_integer_inputs(model)  # token ids stay integers, as in the evaluated data
    out = []
    for i, b in enumerate(batches):
        x = b[0] if isinstance(b, tuple | list) and b else b
        if not isinstance(x, Tensor):
            raise TypeError(
                f"bn_data batch {i} is a {type(b).__name__}; expected an input tensor or a tuple/list whose first "
                "entry is the inputs"
            )
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"bn_data batch {i} is empty (shape {tuple(x.shape)}); the statistics need samples")
        x = normalize_inputs(x, dtype, argname=f"bn_data batch {i}", keep_integer=keep, device=device)
        check_finite(x, f"bn_data batch {i}")
        out.append(x)
    if not out:
        raise ValueError("bn_data holds no batch; the statistics need samples")
    return out


class StatisticsPass:
    """Recomputes a model's BatchNorm running statistics at parameter points.

    Args:
        model: The architecture (a private copy is made; the model is only read).
        layout: Its parameter layout (the points' layout).
        buffers: The buffers used besides the recomputed ones (the model's, or the engine's ``buffers``).
        inputs: The statistics batches, from :func:`statistics_inputs`.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> sp = StatisticsPass(net, ParamLayout.from_model(net), dict(net.named_buffers()), [torch.randn(8, 3)])
        >>> sp.active
        True
    """

    def __init__(
        self, model: nn.Module, layout: ParamLayout, buffers: Mapping[str, Tensor], inputs: list[Tensor]
    ) -> None:
        self.copy = copy.deepcopy(model).eval()
        self.layout, self.base, self.inputs = layout, dict(buffers), inputs
        self.fixed = {k: v.detach() for k, v in self.copy.named_parameters() if k not in layout}
        self.norms: list[str] = []
        for name, mod in self.copy.named_modules():
            if isinstance(mod, _BATCH_NORM) and mod.track_running_stats and mod.running_mean is not None:
                mod.train()
                mod.momentum = None  # a cumulative average over the batches, as swa_utils.update_bn
                self.norms.append(f"{name}." if name else "")
        missing = [f"{p}running_mean" for p in self.norms if f"{p}running_mean" not in self.base]
        if missing:
            raise ValueError(f"the buffers lack the running statistics {missing} of the model's BatchNorm layers")

    @property
    def active(self) -> bool:
        """Whether the model has a BatchNorm layer with running statistics (else nothing is recomputed)."""
        return bool(self.norms)

    def __call__(self, theta: Tensor) -> dict[str, Tensor]:
        """All buffers at point ``theta`` (``(D,)``), the BatchNorm statistics recomputed there."""
        bufs = dict(self.base)
        for p in self.norms:
            bufs[f"{p}running_mean"] = torch.zeros_like(self.base[f"{p}running_mean"])
            bufs[f"{p}running_var"] = torch.ones_like(self.base[f"{p}running_var"])
            if f"{p}num_batches_tracked" in self.base:
                bufs[f"{p}num_batches_tracked"] = torch.zeros_like(self.base[f"{p}num_batches_tracked"])
        tensors = {**self.fixed, **self.layout.unflatten(theta), **bufs}
        with torch.no_grad():
            for i, x in enumerate(self.inputs):  # train-mode BatchNorm updates the passed buffers in place
                try:
                    torch.func.functional_call(self.copy, tensors, (x,), strict=False)
                except ValueError as e:  # BatchNorm's "Expected more than 1 value per channel when training"
                    raise ValueError(
                        f"bn_mode='recompute': the statistics batch {i} ({len(x)} samples) cannot give batch "
                        f"statistics ({e}); give bn_data in batches of at least 2 samples"
                    ) from e
        return bufs
