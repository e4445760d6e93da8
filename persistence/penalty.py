"""The persistent penalty of Persistent Neurons (Persistent Neurons eq. 4-5 and Algorithm 1; its preprint, eq. 4-5).

For previous converged solutions ``Theta_k`` (k = 0 .. n-1) and layers ``l`` (weight and bias of one
module concatenated, ``ParamLayout.layers``), the penalty added to the loss is::

    lambda * c * sum_k sum_l |<Theta_k^l, theta^l>| / ||Theta_k^l||^2

where ``c`` is 1 (000, the extended version) or the preprint's depth estimate
``|L(w_ini) - L(w_0)|`` (PN preprint eq. 4-5): the loss at the initial weights minus the plain model's
converged loss. Partial mode keeps one layer ``l_s`` (drawn at random per persistent iteration, or
named). The anchors are stacked per layer and per tensor, so evaluating the penalty costs one small
matrix-vector product per tensor however many solutions precede; its gradient is the paper's eq. (6),
``lambda * c * sum_k sign(<Theta_k^l, theta^l>) Theta_k^l / ||Theta_k^l||^2``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.params import ParamLayout

__all__ = ["PersistentMode", "PersistentPenalty", "draw_layer"]


class PersistentMode(str, enum.Enum):
    """Which layers the penalty covers: all (PN eq. 4) or one per iteration (PN eq. 5)."""

    FULL = "full"
    PARTIAL = "partial"


def draw_layer(
    layer_names: Sequence[str],
    iteration: int,
    *,
    mode: PersistentMode | str = PersistentMode.FULL,
    seed: int = 0,
    layer: str | None = None,
) -> str | None:
    """The layer a persistent iteration penalizes: a pure function of its arguments.

    Full mode and iteration 0 (the plain model) penalize no single layer (``None``); partial mode penalizes
    the fixed ``layer`` if one is given, else one drawn uniformly from ``layer_names`` by a generator seeded
    with ``[seed, iteration]``. The draw consumes no global random state and does not depend on how many
    iterations ran before, so every engine and every resumed run penalizes the same layers.

    Args:
        layer_names: The model's layer names in order (``ParamLayout.layers``).
        iteration: 0 for the plain model, then 1, 2, ...
        mode: ``"full"`` or ``"partial"``.
        seed: Seed of the draws.
        layer: A fixed layer name (partial mode) instead of the draw.

    Returns:
        The penalized layer, or ``None`` (full mode, iteration 0).

    Raises:
        ValueError: On an unknown mode or layer, or no layers.

    Example:
        >>> draw_layer(["fc1", "fc2"], 3, mode="partial", seed=0) == draw_layer(["fc1", "fc2"], 3, mode="partial")
        True
    """
    mode = parse_option(PersistentMode, mode, "mode")
    names = list(layer_names)
    if layer is not None and layer not in names:
        raise ValueError(f"unknown layer {layer!r}; the model's layers are {names}")
    if mode is PersistentMode.FULL or iteration == 0:
        return None
    if layer is not None:
        return layer
    if not names:
        raise ValueError("the model has no layers to penalize")
    rng = np.random.default_rng([seed, iteration])  # independent of how many iterations ran before
    return names[int(rng.integers(len(names)))]


def penalized_layers(layout: ParamLayout, layers: str | Sequence[str] | None) -> list[str]:
    """The layer names a penalty covers: every layer of ``layout`` for ``None``, else those given, checked.

    A single name may be given as a str (one name, not its characters: Sequential layers "1" and "0" are not
    layer "10").

    Raises:
        ValueError: On a name that is not a layer of ``layout``, naming the model's layers.
    """
    names = list(layout.layers)
    chosen = names if layers is None else [layers] if isinstance(layers, str) else list(layers)
    for name in chosen:
        if name not in names:
            raise ValueError(f"unknown layer {name!r}; the model's layers are {names}")
    return chosen


class PersistentPenalty:
    """A loss term ``penalty(model) -> scalar`` that keeps training away from previous solutions.

    Args:
        layout: Layout of the model's parameter vector (``ParamLayout.from_model(model)``).
        anchors: Previous converged solutions, each a flat vector of shape ``(layout.numel,)``, or a
            matrix of shape ``(K, numel)``.
        lam: Strength ``lambda`` (000: 0.1 for the 2-D toy, 0.01 for the regression MLP and full LeNet-5,
            0.001 for partial persistent training).
        layers: ``None`` for all layers (full persistent training) or the layer names to penalize
            (partial persistent training uses one; a single name may be given as a str).
        depth_factor: The preprint's ``|L(w_ini) - L(w_0)|`` (PN preprint eq. 4-5), or ``None`` for PN's form.

    Raises:
        ValueError: On anchors of the wrong length, unknown layers, or an anchor layer of zero norm.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> from landscape.params import parameters_to_vector
        >>> pen = PersistentPenalty(ParamLayout.from_model(net), [parameters_to_vector(net)], lam=0.1)
        >>> round(float(pen(net).detach()), 6)  # each layer contributes |<w, w>| / ||w||^2 = 1
        0.2
    """

    def __init__(
        self,
        layout: ParamLayout,
        anchors: Tensor | Sequence[Tensor],
        lam: float,
        *,
        layers: Iterable[str] | None = None,
        depth_factor: float | None = None,
    ) -> None:
        mat = anchors if isinstance(anchors, Tensor) else (torch.stack(list(anchors)) if len(anchors) else None)
        if mat is None:
            mat = torch.zeros(0, layout.numel)
        if mat.dim() != 2 or mat.shape[1] != layout.numel:
            raise ValueError(
                f"anchors must have shape (K, {layout.numel}) for this architecture, got {tuple(mat.shape)}"
            )
        groups = layout.layers
        chosen = penalized_layers(layout, layers)
        self.layout = layout
        self.lam = float(lam)
        self.depth_factor = None if depth_factor is None else abs(float(depth_factor))
        self.layers = tuple(chosen)
        self.num_anchors = mat.shape[0]
        mat = mat.detach()
        # Per layer: anchor blocks per tensor (K, n_t) pre-divided by ||Theta_k^l||^2.
        self._blocks: list[tuple[tuple[str, ...], list[Tensor]]] = []
        for name in self.layers:
            specs = groups[name]
            sq = sum((mat[:, s.start : s.stop].double() ** 2).sum(1) for s in specs)
            if mat.shape[0] and bool((sq == 0).any()):
                k = int((sq == 0).nonzero()[0])
                raise ValueError(f"anchor {k} has all-zero parameters in layer {name!r}; the penalty is undefined")
            blocks = [(mat[:, s.start : s.stop].double() / sq[:, None]).to(mat.dtype) for s in specs]
            self._blocks.append((tuple(s.name for s in specs), blocks))

    @property
    def scale(self) -> float:
        """``lambda`` times the depth factor (1 when none)."""
        return self.lam * (1.0 if self.depth_factor is None else self.depth_factor)

    def from_params(self, params: dict[str, Tensor]) -> Tensor:
        """The penalty at a name->tensor dict of the model's trainable parameters (scalar tensor)."""
        total = None
        for names, blocks in self._blocks:
            dots = None
            for name, block in zip(names, blocks):
                p = params[name].reshape(-1)
                term = block.to(p.dtype) @ p
                dots = term if dots is None else dots + term
            if dots is None:
                continue
            s = dots.abs().sum()
            total = s if total is None else total + s
        if total is None:
            any_p = next(iter(params.values()))
            return any_p.new_zeros(())
        return self.scale * total

    def from_vector(self, vec: Tensor) -> Tensor:
        """The penalty at a flat parameter vector of shape ``(numel,)``."""
        return self.from_params(self.layout.unflatten(vec))

    def __call__(self, model: nn.Module) -> Tensor:
        """The penalty at the model's current parameters (differentiable; use as a ``Trainer`` regularizer)."""
        return self.from_params(dict(model.named_parameters()))
