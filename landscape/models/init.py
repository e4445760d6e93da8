"""Weight initializations named in the papers, drawn reproducibly."""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.weight_norm import WeightNorm

from landscape._options import parse_option

__all__ = ["InitScheme", "WEIGHT_LAYERS", "NORM_LAYERS", "seeded", "init_weights"]


class InitScheme(str, enum.Enum):
    """Weight initializations named in the papers.

    ``he``/``kaiming``: weights N(0, 2 / fan_in), biases 0 (He et al. 2015; Persistent Neurons §3).
    ``xavier``/``glorot``: weights U(-a, a), a = sqrt(6 / (fan_in + fan_out)), biases 0 (Glorot &
    Bengio 2010's "normalized initialization"; Persistent Neurons §5). ``xavier_normal``: weights
    N(0, 2 / (fan_in + fan_out)), biases 0. ``default``: PyTorch's own ``reset_parameters``.
    ``normal``: weights and biases N(mean, std) (Persistent Neurons §4: N(0, 0.2) "bad" and
    N(0, 0.05) "good" LeNet-5; Im et al. A.5: N(-10, 0.01), N(-1, 1)).
    """

    DEFAULT = "default"
    HE = "he"
    KAIMING = "kaiming"
    XAVIER = "xavier"
    GLOROT = "glorot"
    XAVIER_NORMAL = "xavier_normal"
    NORMAL = "normal"


# The layers an init scheme draws: weight (out, in / groups, *kernel), or (in, out / groups, *kernel) for the
# transposed convolutions (see _fans).
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    *(c for c in (getattr(nn, "RMSNorm", None),) if c is not None),  # torch >= 2.4
)


# --------------------------------------------------------------------------- initialization
@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run with torch's global CPU generator seeded, restoring its previous state afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def init_weights(
    model: nn.Module,
    scheme: InitScheme | str = InitScheme.DEFAULT,
    *,
    seed: int | None = None,
    mean: float = 0.0,
    std: float | None = None,
    include_norm: bool = False,
) -> nn.Module:
    """Re-initialize a freshly built model's weights **in place** and return it.

    This is the one function in the package that writes into a model; call it on models you just
    built (as :func:`build_model` does), never on a caller's trained model.

    Linear and convolution layers are drawn by ``scheme`` (see :class:`InitScheme`). Normalization
    layers keep weight 1 and bias 0, except under ``"normal"`` with ``include_norm=True``, where
    they are drawn too (the "all parameters" reading of Im et al.'s exotic initializations).
    ``"default"`` calls every module's own ``reset_parameters`` (BatchNorm running statistics reset too).

    Args:
        model: A freshly built module.
        scheme: ``"he"``/``"kaiming"``, ``"xavier"``/``"glorot"``, ``"xavier_normal"``, ``"default"`` or ``"normal"``.
        seed: If given, draw from a generator seeded with it (the global RNG state is restored after).
        mean: Mean for ``"normal"``.
        std: Standard deviation for ``"normal"`` (required there).
        include_norm: Under ``"normal"``, also draw normalization layers' weight and bias.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: On an unknown scheme, or ``"normal"`` without ``std``.
    """
    scheme = parse_option(InitScheme, scheme, "init scheme")
    if scheme is InitScheme.NORMAL and (std is None or std < 0):
        raise ValueError("init scheme 'normal' needs std >= 0, e.g. init_weights(model, 'normal', std=0.05)")
    with seeded(seed), torch.no_grad():
        for module in model.modules():
            if scheme is InitScheme.DEFAULT:
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
                continue
            if isinstance(module, WEIGHT_LAYERS):
                _draw(module, scheme, mean, std)
            elif isinstance(module, NORM_LAYERS) and scheme is InitScheme.NORMAL and include_norm:
                for p in (getattr(module, "weight", None), getattr(module, "bias", None)):
                    if isinstance(p, Tensor):
                        p.normal_(mean, std)  # type: ignore[arg-type]
    return model


_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _fans(module: nn.Module, weight: Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)``: the inputs feeding one output unit, and the outputs one input unit feeds.

    Channels per group times kernel size; a transposed convolution counts as the convolution it transposes with
    input and output exchanged (exact at stride 1). torch's ``nn.init`` reads the fans off the weight's first two
    axes as if every layer were an ungrouped convolution: a grouped convolution's fan-out came out ``groups`` times
    too large (a depthwise 3x3 conv of 64 channels: 576 instead of 9), and a transposed convolution, whose weight is
    ``(in, out / groups, *kernel)``, had its two fans swapped.
    """
    groups = int(getattr(module, "groups", 1))
    receptive = math.prod(weight.shape[2:])
    if isinstance(module, _TRANSPOSED):
        return weight.shape[0] // groups * receptive, weight.shape[1] * receptive
    return weight.shape[1] * receptive, weight.shape[0] // groups * receptive


def _draw(module: nn.Module, scheme: InitScheme, mean: float, std: float | None) -> None:
    # A parametrized weight (weight_norm, spectral_norm) is computed from its originals on every access, and the old
    # hook of torch.nn.utils.weight_norm recomputes it from weight_g and weight_v before every forward: drawing into it
    # changed nothing. Draw a fresh tensor and set the originals from it.
    parametrized = torch.nn.utils.parametrize.is_parametrized(module, "weight")
    hook = next(
        (h for h in module._forward_pre_hooks.values() if isinstance(h, WeightNorm) and h.name == "weight"), None
    )
    fresh = parametrized or hook is not None
    weight: Tensor = torch.empty_like(module.weight) if fresh else module.weight  # type: ignore[arg-type,assignment]
    bias: Tensor | None = module.bias  # type: ignore[assignment]
    _fill(module, weight, scheme, mean, std)
    if parametrized:
        module.weight = weight  # through the parametrization's right_inverse
    elif hook is not None:  # weight = g v / |v| (norms over every axis but hook.dim): v = w, g = |w|
        module.weight_v.copy_(weight)  # type: ignore[operator]
        module.weight_g.copy_(torch.norm_except_dim(weight, 2, hook.dim))  # type: ignore[operator]
        module.weight = hook.compute_weight(module)
    if bias is not None:
        if scheme is InitScheme.NORMAL:
            bias.normal_(mean, std)  # type: ignore[arg-type]
        else:
            bias.zero_()


def _fill(module: nn.Module, weight: Tensor, scheme: InitScheme, mean: float, std: float | None) -> None:
    fan_in, fan_out = _fans(module, weight)
    # nn.init's kaiming_normal_ / xavier_uniform_ / xavier_normal_ with the right fans: the same expressions and
    # draws, so an ungrouped layer gets bitwise the weights it always got.
    if weight.numel() == 0:
        pass
    elif scheme in (InitScheme.HE, InitScheme.KAIMING):
        weight.normal_(0, math.sqrt(2.0) / math.sqrt(fan_in))
    elif scheme in (InitScheme.XAVIER, InitScheme.GLOROT):
        bound = math.sqrt(3.0) * math.sqrt(2.0 / float(fan_in + fan_out))
        weight.uniform_(-bound, bound)
    elif scheme is InitScheme.XAVIER_NORMAL:
        weight.normal_(0.0, math.sqrt(2.0 / float(fan_in + fan_out)))
    else:  # NORMAL
        weight.normal_(mean, std)  # type: ignore[arg-type]
