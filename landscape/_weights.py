"""The weights of a :class:`~landscape.problem.Problem`: the model's tensors cast once, and the model at any point.

The model itself is never modified: :class:`ModelWeights` keeps cast copies of its parameters, buffers and
frozen parameters, builds a :class:`~landscape.functional.FunctionalModel` at any parameter vector, and (only
when the compute dtype or device differ from the model's) one private cast copy of the module.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from landscape._checks import floating_reference
from landscape.functional import FunctionalModel
from landscape.params import ParamLayout

__all__ = ["ModelWeights", "compute_placement"]


def compute_placement(
    model: nn.Module, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[torch.dtype, torch.device]:
    """The compute dtype and device: those given, else the model's first floating tensor's, else float32 on the CPU."""
    ref = floating_reference(model)
    dtype = dtype or (ref.dtype if ref is not None else torch.float32)
    if device is not None:
        return dtype, torch.device(device)
    return dtype, (ref.device if ref is not None else torch.device("cpu"))


class ModelWeights:
    """A model's parameters (in its layout's order), buffers and frozen parameters, cast once.

    Args:
        model: The network (never modified).
        layout: Its parameter layout (the parameters that make up a point ``theta``).
        dtype: Compute dtype (floating tensors are cast to it).
        device: Compute device.

    Attributes:
        params: ``{name: tensor}`` of the layout's parameters, cast.
        buffers: ``{name: tensor}`` of the model's buffers, cast.
        frozen: ``{name: tensor}`` of the parameters outside the layout, cast.
    """

    def __init__(self, model: nn.Module, layout: ParamLayout, dtype: torch.dtype, device: torch.device) -> None:
        self.model, self.layout, self.dtype, self.device = model, layout, dtype, device
        named = dict(model.named_parameters())
        self.params = {s.name: self._cast(named[s.name]) for s in layout.specs}
        self.buffers = {k: self._cast(v) for k, v in model.named_buffers()}
        self.frozen = {k: self._cast(v) for k, v in named.items() if k not in self.params}
        self._cast_model: nn.Module | None = None

    def _cast(self, t: Tensor) -> Tensor:
        if hasattr(t, "full_tensor"):  # a DTensor (FSDP2 / tensor parallel): gathered whole, once (collective)
            t = t.full_tensor()
        t = t.detach().to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def functional(self, theta: Tensor | Mapping[str, Tensor] | None, bn_train: bool) -> FunctionalModel:
        """The model at ``theta`` (``(D,)`` vector or parameter dict; ``None``: the model's own point).

        ``bn_train``: BatchNorm uses each batch's statistics; the running buffers are updated on private copies.
        """
        if theta is None:
            params: Mapping[str, Tensor] = self.params
        elif isinstance(theta, Tensor):
            params = self.layout.unflatten(theta.to(device=self.device, dtype=self.dtype))
        else:
            params = theta
        bufs = self.buffers
        if bn_train and bufs:
            bufs = {k: v.clone() for k, v in bufs.items()}  # running statistics updated privately
        return FunctionalModel(self.model, {**self.frozen, **bufs, **params}, bn_train)

    def compute_model(self) -> nn.Module:
        """The model in the compute dtype and device: the model itself, or a private cast copy (built once)."""
        ref = floating_reference(self.model)
        if ref is None or (ref.dtype == self.dtype and ref.device == self.device):
            return self.model
        if self._cast_model is None:
            self._cast_model = copy.deepcopy(self.model).to(device=self.device, dtype=self.dtype)
        return self._cast_model
