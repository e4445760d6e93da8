"""Tunnel sites: the layer pairs a unit or filter can be cloned across, and the records of tunnel events.

Part of "Escaping Flat Areas via Function-Preserving Structural Network Modifications" (anonymous,
ICLR 2019 submission; "Tunnels"). This module finds and checks sites and resolves site names to
modules; :mod:`tunnels.surgery` edits them (opening, closing, reorganization) and :mod:`tunnels.split`
computes their matrices A. The records of what an operation did at a site (:class:`UnitChange`,
:class:`TunnelEvent`, JSON-serializable for trajectory tags) are plain data shared by the surgery
and the training schedule, so they are defined here as well.

Sites. A *site* is a producer layer whose units are cloned (output features of an ``nn.Linear``,
filters of an ``nn.Conv2d``) and its consumer, the next ``nn.Linear`` / ``nn.Conv2d`` reading them.
Supported pairs come from the registry ``_PAIR_RULES``: Linear -> Linear, Conv2d -> Conv2d and
Conv2d -> Flatten -> Linear (``groups=1`` on both convolutions). Between the two, only modules acting
on each unit (channel) separately are allowed, since then a cloned unit produces exactly the same
signal as its original: pointwise activations, ``nn.Identity``, ``nn.Dropout`` (function-preserving
in eval mode only: a clone draws its own mask in train mode), BatchNorm over the units, and for
convolutions max / average pooling and one ``nn.Flatten`` (Conv2d -> Linear, where unit ``u`` owns
the ``M = in_features / U`` consecutive inputs ``u*M ... u*M+M-1`` of the Linear). A BatchNorm
between producer and consumer is cloned with the unit: its weight, bias, running mean and running
variance of channel ``u`` are copied to the clone (``num_batches_tracked`` is shared), so in eval
and in train mode the clone's normalized signal equals the original's.

The consumer is found automatically after the producer inside the ``nn.Sequential`` body holding it
(nested Sequentials are walked through), or named explicitly. An explicit consumer may sit in
another container (a model whose ``forward`` flattens between ``features`` and ``classifier``); the
code between containers must then act per channel, which :func:`tunnels.split.split_stats` checks
numerically on every batch.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from landscape.models.blocks import ELEMENTWISE_ACTIVATIONS

__all__ = [
    "PairKind",
    "EventKind",
    "UnsupportedSiteError",
    "TunnelSite",
    "UnitChange",
    "TunnelEvent",
    "resolve_site",
    "find_sites",
]


class PairKind(str, enum.Enum):
    """The supported (producer, consumer) layer pairs."""

    LINEAR_LINEAR = "linear-linear"
    CONV_CONV = "conv-conv"
    CONV_LINEAR = "conv-linear"


class UnsupportedSiteError(ValueError):
    """A producer / consumer pair, or a module between them, that tunnels cannot handle."""


# The registry: which producer -> consumer pairs have a tunnel rule (what sits between is checked apart).
_PAIR_RULES: dict[tuple[type[nn.Module], type[nn.Module]], PairKind] = {
    (nn.Linear, nn.Linear): PairKind.LINEAR_LINEAR,
    (nn.Conv2d, nn.Conv2d): PairKind.CONV_CONV,
    (nn.Conv2d, nn.Linear): PairKind.CONV_LINEAR,
}
# What the registry supports, for error messages.
SUPPORTED_PAIRS = "Linear -> Linear, Conv2d -> Conv2d, Conv2d -> [pooling] -> Flatten -> Linear"
# Modules acting on each unit alone: the elementwise activations (PReLU is not among them: its
# per-channel weight would have to be cloned with the unit), Identity and Dropout.
_POINTWISE: tuple[type[nn.Module], ...] = (*ELEMENTWISE_ACTIVATIONS, nn.Identity, nn.Dropout)
_POOLS: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_CONSUMERS: tuple[type[nn.Module], ...] = tuple(dict.fromkeys(ct for _, ct in _PAIR_RULES))
_BETWEEN = "pointwise activations, Identity, Dropout, BatchNorm1d/2d, MaxPool2d/AvgPool2d/Adaptive*Pool2d, Flatten"


@dataclass(frozen=True)
class TunnelSite:
    """A producer layer whose units can be cloned and the consumer reading them.

    Attributes:
        producer: Module name of the producer (``nn.Linear`` or ``nn.Conv2d``).
        consumer: Module name of the consumer.
        kind: Which rule of the registry applies.
        between: Names of the modules between them, in order.
        norms: Names of the BatchNorm modules among ``between`` (cloned with the unit).
        n_units: ``U``, the producer's output features / channels.
        n_in: ``K``, inbound parameters per unit: weight row (``C*kh*kw`` or ``in_features``), bias, then
            weight and bias of each affine BatchNorm (the rows of A).
        n_weight: Inbound weights per unit without bias and BatchNorm (``C*kh*kw`` or ``in_features``).
        n_consumer: ``V``, the consumer's output features / channels.
        spatial: ``Q``, outbound weights per unit and consumer unit: 1, ``kh*kw`` of the consumer, or the
            flattened size ``M`` per channel (Conv2d -> Linear).
    """

    producer: str
    consumer: str
    kind: PairKind
    between: tuple[str, ...]
    norms: tuple[str, ...]
    n_units: int
    n_in: int
    n_weight: int
    n_consumer: int
    spatial: int

    @property
    def n_out(self) -> int:
        """``L = V * Q``, outbound weights per unit (the columns of A, the length of lambda)."""
        return self.n_consumer * self.spatial

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        d = asdict(self)
        d["kind"] = self.kind.value
        d["between"], d["norms"] = list(self.between), list(self.norms)
        return d


class EventKind(str, enum.Enum):
    """What a :class:`TunnelEvent` did."""

    OPEN = "open"
    CLOSE = "close"
    REORGANIZE = "reorganize"


@dataclass(frozen=True)
class UnitChange:
    """One unit touched by a tunnel event (indices refer to the model before the event).

    Attributes:
        producer: Producer module name.
        consumer: Consumer module name.
        unit: The unit cloned (open, reorganize) or kept (close).
        clone: Index of the clone in the new model (open, reorganize: the slot of ``u2``), or the
            unit merged into ``unit`` and removed (close).
        lambdas: The outbound split kept by ``unit``, shape ``(L,)`` in the consumer's weight order
            (consumer unit major); the clone got ``1 - lambdas``. Empty for a close.
        rho: Largest eigenvalue of ``A^T A`` for this unit, when A was known.
        merged_into: Reorganize only: the unit ``u1`` that ``clone`` (``u2``) was merged into first.
    """

    producer: str
    consumer: str
    unit: int
    clone: int
    lambdas: tuple[float, ...] = ()
    rho: float | None = None
    merged_into: int | None = None


@dataclass(frozen=True)
class TunnelEvent:
    """A record of one opening, closing or reorganization; JSON-serializable for trajectory tags.

    Attributes:
        kind: ``"open"``, ``"close"`` or ``"reorganize"``.
        changes: The units touched, in the order applied.
        mode: How lambda was chosen (``"proposed"``, ``"random"``, ``"constant"``, ``"half"``, ``"given"``).
        t: Step length of ``lambda_t = 1/2 + t * direction``, when one was used.
        seed: Seed of the random direction (mode ``"random"``).
        stats: How A was estimated (``"full"``, ``"partial"``, ``"ema"``), if it was.
        n_examples: Examples behind the estimate of A.

    Example:
        >>> ev = TunnelEvent("open", (UnitChange("0", "2", unit=1, clone=4, lambdas=(0.5, 0.5)),))
        >>> TunnelEvent.from_json(ev.to_json()) == ev
        True
    """

    kind: str
    changes: tuple[UnitChange, ...]
    mode: str = "given"
    t: float | None = None
    seed: int | None = None
    stats: str | None = None
    n_examples: int | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        """Producer names touched, without repeats, in order."""
        return tuple(dict.fromkeys(c.producer for c in self.changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (``{"type": "tunnel", ...}``), e.g. for ``Trainer.replace_model(event=...)``."""
        d = {"type": "tunnel", **asdict(self)}
        d["changes"] = [{**asdict(c), "lambdas": list(c.lambdas)} for c in self.changes]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TunnelEvent:
        """Inverse of :meth:`to_dict` (extra keys such as ``"step"`` are ignored)."""
        changes = tuple(
            UnitChange(**{**c, "lambdas": tuple(float(v) for v in c.get("lambdas", ()))}) for c in d["changes"]
        )
        keys = ("mode", "t", "seed", "stats", "n_examples")
        return cls(kind=str(d["kind"]), changes=changes, **{k: d[k] for k in keys if k in d})

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> TunnelEvent:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


# ============================================================================ site resolution
def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children (or with own parameters), in registration order, through all containers."""
    out: list[tuple[str, nn.Module]] = []

    def walk(m: nn.Module, prefix: str) -> None:
        kids = list(m.named_children())
        own = any(p is not None for p in m._parameters.values())
        if not kids or own:
            out.append((prefix, m))
            return
        for n, c in kids:
            walk(c, f"{prefix}.{n}" if prefix else n)

    walk(model, "")
    return out


def _sequential_root(model: nn.Module, name: str) -> str | None:
    """Outermost ancestor of ``name`` from which every container down to it is an ``nn.Sequential``."""
    parts = name.split(".")
    root = None
    for i in range(len(parts) - 1, -1, -1):
        anc = ".".join(parts[:i])
        if isinstance(model.get_submodule(anc) if anc else model, nn.Sequential):
            root = anc
        else:
            break
    return root


def _in_body(name: str, root: str) -> bool:
    return root == "" or name.startswith(root + ".")


def _rule(producer: nn.Module, consumer: nn.Module, pname: str, cname: str) -> PairKind:
    for (pt, ct), kind in _PAIR_RULES.items():
        if isinstance(producer, pt) and isinstance(consumer, ct):
            return kind
    raise UnsupportedSiteError(
        f"no tunnel rule for {type(producer).__name__} {pname!r} -> {type(consumer).__name__} {cname!r}; "
        f"supported pairs: {SUPPORTED_PAIRS}"
    )


def _build_site(
    model: nn.Module, pname: str, cname: str, between: list[tuple[str, nn.Module]], implicit: bool
) -> TunnelSite:
    prod, cons = model.get_submodule(pname), model.get_submodule(cname)
    kind = _rule(prod, cons, pname, cname)
    conv = kind is not PairKind.LINEAR_LINEAR
    units = prod.out_channels if conv else prod.out_features
    if conv and prod.groups != 1:
        raise UnsupportedSiteError(f"producer {pname!r} has groups={prod.groups}; tunnels need groups=1")
    norms, n_affine, flat_at = [], 0, None
    for i, (n, m) in enumerate(between):
        where = f"module {n!r} ({type(m).__name__}) between {pname!r} and {cname!r}"
        if isinstance(m, nn.Flatten):
            if kind is not PairKind.CONV_LINEAR or flat_at is not None or (m.start_dim, m.end_dim) != (1, -1):
                raise UnsupportedSiteError(f"{where}: a Flatten(1, -1) is allowed once, between Conv2d and Linear")
            flat_at = i
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            if isinstance(m, nn.BatchNorm2d) != conv or flat_at is not None or m.num_features != units:
                raise UnsupportedSiteError(
                    f"{where}: BatchNorm must normalize the {units} producer units (BatchNorm1d after Linear, "
                    "BatchNorm2d after Conv2d, before any Flatten)"
                )
            norms.append(n)
            n_affine += int(m.affine)
        elif isinstance(m, _POOLS):
            if not conv or flat_at is not None or getattr(m, "return_indices", False):
                raise UnsupportedSiteError(f"{where}: pooling is allowed between convolutions and before Flatten")
        elif not isinstance(m, _POINTWISE):
            raise UnsupportedSiteError(f"{where} does not act on each unit separately; allowed between: {_BETWEEN}")
    if kind is PairKind.CONV_LINEAR and flat_at is None and not implicit:
        raise UnsupportedSiteError(f"Conv2d {pname!r} -> Linear {cname!r} needs an nn.Flatten between them")
    if kind is PairKind.CONV_CONV:
        if cons.in_channels != units or cons.groups != 1:
            raise UnsupportedSiteError(
                f"consumer {cname!r} must read the {units} channels of {pname!r} with groups=1 "
                f"(has in_channels={cons.in_channels}, groups={cons.groups})"
            )
        n_cons, spatial = cons.out_channels, cons.kernel_size[0] * cons.kernel_size[1]
    else:
        if cons.in_features % units or (kind is PairKind.LINEAR_LINEAR and cons.in_features != units):
            raise UnsupportedSiteError(
                f"consumer {cname!r} has in_features={cons.in_features}, which does not fit the {units} units "
                f"of {pname!r}"
            )
        n_cons, spatial = cons.out_features, cons.in_features // units
    n_weight = prod.weight[0].numel()
    n_in = n_weight + int(prod.bias is not None) + 2 * n_affine
    return TunnelSite(
        pname, cname, kind, tuple(n for n, _ in between), tuple(norms), units, n_in, n_weight, n_cons, spatial
    )


def resolve_site(model: nn.Module, producer: Any, consumer: str | None = None) -> TunnelSite:
    """Find and check the site of a producer layer in ``model``.

    Args:
        model: The network (not modified).
        producer: Module name of the producer, a ``(producer, consumer)`` pair, or a :class:`TunnelSite`
            (re-resolved against ``model``, whose sizes may have changed).
        consumer: Module name of the consumer; default: the next Linear / Conv2d after the producer in
            its ``nn.Sequential`` body.

    Returns:
        The site.

    Raises:
        KeyError: If a name is not a module of ``model``.
        UnsupportedSiteError: If the pair or a module between is not supported; the message names the
            layer types and what is supported.
    """
    if isinstance(producer, TunnelSite):
        producer, consumer = producer.producer, producer.consumer
    elif isinstance(producer, tuple):
        producer, consumer = producer
    leaves = _leaves(model)
    index = {n: i for i, (n, _) in enumerate(leaves)}
    for name in (producer, consumer):
        if name is not None and name not in index:
            raise KeyError(f"no leaf module {name!r} in the model; leaves are {list(index)}")
    i = index[producer]
    root = _sequential_root(model, producer)
    if consumer is None:
        if root is None:
            raise UnsupportedSiteError(
                f"{producer!r} is not inside an nn.Sequential, so its consumer cannot be located; pass consumer="
            )
        for j in range(i + 1, len(leaves)):
            n, m = leaves[j]
            if not (_in_body(n, root) and _sequential_root(model, n) is not None):
                break
            known = isinstance(m, (*_POINTWISE, *_POOLS, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d))
            if not known and not isinstance(m, _CONSUMERS):  # e.g. LayerNorm, PReLU: say why, not "no rule"
                raise UnsupportedSiteError(
                    f"module {n!r} ({type(m).__name__}) after {type(leaves[i][1]).__name__} {producer!r} is neither a "
                    f"consumer (Linear, Conv2d) nor a module acting on each unit separately ({_BETWEEN}); "
                    f"supported pairs: {SUPPORTED_PAIRS}"
                )
            if not known:
                return _build_site(model, producer, n, leaves[i + 1 : j], implicit=False)
        raise UnsupportedSiteError(
            f"no consumer after {type(leaves[i][1]).__name__} {producer!r} inside its Sequential body "
            f"{root!r}; the last layer has no tunnel, or pass consumer= explicitly"
        )
    j = index[consumer]
    if j <= i:
        raise UnsupportedSiteError(f"consumer {consumer!r} is registered before producer {producer!r}")
    same_body = root is not None and _in_body(consumer, root) and _sequential_root(model, consumer) is not None
    return _build_site(model, producer, consumer, leaves[i + 1 : j], implicit=not same_body)


def find_sites(model: nn.Module) -> tuple[TunnelSite, ...]:
    """Every supported site found automatically in ``model``'s Sequential bodies, in module order.

    Args:
        model: The network (not modified).

    Returns:
        The sites (producers without a supported consumer are skipped).
    """
    out = []
    for name, m in _leaves(model):
        if isinstance(m, nn.Linear | nn.Conv2d):
            try:
                out.append(resolve_site(model, name))
            except UnsupportedSiteError:
                continue
    return tuple(out)


def module_order(model: nn.Module) -> dict[str, int]:
    """Position of every leaf module name in the model's module order (sites are processed in this order)."""
    return {n: i for i, (n, _) in enumerate(_leaves(model))}
