"""Deriving a :class:`~landscape.analyze.permutation_spec.PermutationSpec` by tracing the model.

The spec is derived by tracing the model with :mod:`torch.fx` and propagating, value by value,
which group owns its channel axis:

* Linear and Conv layers start a new group for their outputs (the input axis of their weight takes
  the group of their input); the last layer's outputs reach the model output and stay fixed.
* Pointwise modules and functions (activations, dropout, pooling) pass the group on; BatchNorm and
  LayerNorm take it on their weight, bias and running statistics. An ``N``-d pooling must act on the spatial
  axes of a batched ``(B, C, *N spatial)`` value: pooling a Linear's output pools its features, and is refused.
* ``mean`` / ``amax`` over axes other than the channels pool within each channel; over the channels they leave
  a value no permutation changes. Dims count from either end: the rank of a value is carried from the layer
  that made it (a convolution's ``(B, C, *spatial)``, an LSTM's ``(B, T, H)``, a flattened ``(B, F)``), so
  ``mean(dim=-3)`` of a Conv2d output is recognised as over the channels. A Linear applied to the model's
  input has no known rank: a non-negative dim of its output is read as a position axis (``(B, T, C).mean(1)``;
  write ``dim=-1`` for its features).
* Adding two values merges their groups: the residual stream of a ResNet shares one permutation
  across the blocks it runs through. A stream added to an unpermuted value (the input) stays fixed.
* ``Flatten`` after a convolution turns each channel into a block of ``H * W`` features of the next
  Linear's input (the block size is read from that Linear's ``in_features``), or of a BatchNorm or
  LayerNorm over the flattened features. Only a flatten of every axis from 1 on (``x.view(B, -1)``) is one:
  ``x.view(B, C, -1)`` or ``flatten(x, 1, 2)`` keep an axis apart and are refused.

* A tensor used more than once (a module called twice or registered under two names, a tied parameter) moves the
  same way in every use: its groups on each axis are merged, and the axis stays fixed when one use takes it
  unpermuted (a Linear applied to the input and again to its own output). Every name of a tied tensor is in
  the spec.
* A unidirectional LSTM starts one group per layer, applied inside each of the four stacked gates of
  ``weight_ih``, ``weight_hh`` (rows and columns) and the biases; its output and one layer of ``h_n`` carry it.

Anything else a permuted value flows into (attention, concatenation, grouped convolution, local
response normalization, bidirectional LSTM, ...) raises a
:class:`~landscape.analyze.permutation_spec.PermutationSpecError` naming the module or operation.
Ainsworth, Hayase and Srinivasa, *Git Re-Basin* (ICLR 2023), §2-3 define the permutation spec this
module derives.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import torch
import torch.fx
from torch import nn

from landscape.analyze.permutation_spec import AxisPerm, PermutationSpec, PermutationSpecError
from landscape.models.blocks import ELEMENTWISE_ACTIVATIONS

__all__ = ["permutation_spec"]


# Modules that act pointwise on channels (or pool within a channel): the group passes through.
_POINTWISE: tuple[type[nn.Module], ...] = (
    *ELEMENTWISE_ACTIVATIONS,
    nn.PReLU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_NONLINEAR = tuple(
    t
    for t in _POINTWISE
    if t not in (nn.Identity,) and not issubclass(t, nn.modules.dropout._DropoutNd) and "Pool" not in t.__name__
)
_PRELU = (nn.PReLU,)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_F = torch.nn.functional
_POINTWISE_FUNCS = {
    torch.relu,
    _F.relu,
    torch.tanh,
    _F.tanh,
    torch.sigmoid,
    _F.sigmoid,
    _F.gelu,
    _F.silu,
    _F.elu,
    _F.leaky_relu,
    _F.softplus,
    _F.hardtanh,
    _F.relu6,
    _F.mish,
    _F.dropout,
    _F.dropout2d,
    _F.max_pool1d,
    _F.max_pool2d,
    _F.max_pool3d,
    _F.avg_pool1d,
    _F.avg_pool2d,
    _F.avg_pool3d,
    _F.adaptive_avg_pool1d,
    _F.adaptive_avg_pool2d,
    _F.adaptive_max_pool2d,
    torch.abs,
    torch.exp,
    torch.neg,
    operator.neg,
    torch.clamp,
}
_POINTWISE_METHODS = {
    "relu",
    "tanh",
    "sigmoid",
    "abs",
    "exp",
    "neg",
    "clamp",
    "contiguous",
    "clone",
    "float",
    "double",
    "to",
    "detach",
}
_BINARY_FUNCS = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclasses.dataclass(frozen=True)
class _Val:
    """The group of a traced value's channel axis: ``gid`` (None: unpermuted), the axis, flattened or not."""

    gid: int | None
    axis: int = 1
    flat: bool = False
    kind: str = "tensor"  # or "lstm" (its output tuple), "state" (the (h, c) tuple), "layers" (h_n or c_n)
    ndim: int | None = None
    layers: tuple[int, ...] = ()


class _Groups:
    """Union-find over groups; group 0 is the fixed (identity) group."""

    def __init__(self) -> None:
        self.parent = [0]
        self.size = [0]
        self.name = ["<fixed>"]

    def new(self, n: int, name: str) -> int:
        self.parent.append(len(self.parent))
        self.size.append(n)
        self.name.append(name)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int, where: str) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if 0 not in (ra, rb) and self.size[ra] != self.size[rb]:
            raise PermutationSpecError(
                f"{where}: adds values of {self.size[ra]} and {self.size[rb]} channels; they cannot share a permutation"
            )
        lo, hi = min(ra, rb), max(ra, rb)  # the older group (or the fixed one) names the merge
        self.parent[hi] = lo
        return lo


def _to_last(end: Any, ndim: int | None) -> bool:
    """Whether a flatten's ``end_dim`` is the last axis (``-1``, or ``ndim - 1`` when the rank is known)."""
    return isinstance(end, int) and (end == -1 or (ndim is not None and end == ndim - 1))


def _reduction(v: _Val, dims: Any, keepdim: bool) -> _Val | None:
    """The value after ``mean`` / ``amax`` over ``dims`` of a value with a group; ``None`` if it cannot be told.

    The channel axis is 1 (a convolution's output) or the last one (a Linear's, an LSTM's, a flattened value).
    A dimension may be given from either end, so it is compared with the channel axis at the value's rank
    (known from the layer that made it). Reducing over the channels leaves a value no permutation of them
    changes (a symmetric function of the units): unpermuted. Reducing the batch axis (0) of a channel-first
    value moves its channels to axis 0, which nothing after it expects. When the rank is unknown (a Linear
    applied to the model's input), a non-negative dim of a last-axis value is taken as a position axis
    (``(B, T, C).mean(1)``).
    """
    if dims is None:
        return _Val(None)  # every axis: a scalar
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        return None
    n = v.ndim
    if n is None:
        if v.axis == 1:  # only axes counted from the front can be told apart from the channels
            return None if any(d < 1 for d in dims) else v if 1 not in dims else _Val(None)
        return _Val(None) if -1 in dims else v
    if not all(-n <= d < n for d in dims):
        return None
    got = {d % n for d in dims}
    if (1 if v.axis == 1 else n - 1) in got:
        return _Val(None)
    if v.axis == 1 and 0 in got and not keepdim:
        return None
    return dataclasses.replace(v, ndim=n if keepdim else n - len(got))


def _pools_within_channels(name: str, v: _Val) -> bool:
    """Whether ``name`` (a module class or function name) is not a pooling, or pools a value within its channels.

    An ``N``-d pooling acts on the last ``N`` axes: of a batched channel-first value ``(B, C, *N spatial)`` these
    are spatial, but on a Linear's output (channels last) or an unbatched-looking input (``MaxPool2d`` of a
    Conv1d's ``(B, C, L)``) they include the channels, which the pooling then mixes.
    """
    low = name.lower()
    if "pool" not in low or low[-2:] not in ("1d", "2d", "3d"):
        return True
    return v.axis == 1 and not v.flat and v.ndim == int(low[-2]) + 2


def _where(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    inside = f" inside module {list(stack)[-1]!r}" if stack else ""
    return f"operation {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)}){inside}"


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """Derive the permutation spec of a model by tracing it with :mod:`torch.fx`.

    Args:
        model: Any module :func:`torch.fx.symbolic_trace` can trace (only read).

    Returns:
        The spec: groups, the tensor axes each moves (parameters and buffers), the sites for
        activation matching and REPAIR.

    Raises:
        PermutationSpecError: If the model cannot be traced, or a permuted value flows into a module or
            operation the derivation does not know (the message names it and lists what is supported).

    Example:
        >>> from landscape.models.zoo import build_model
        >>> spec = permutation_spec(build_model("small_resnet", (1, 8, 8), 10, seed=0))
        >>> len(spec.groups)  # stem + stream of stage 1, and per stage: inner conv, stream
        6
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure becomes one clear error
        raise PermutationSpecError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}); the permutation spec is "
            "derived from the traced graph, so forward() must be free of data-dependent control flow"
        ) from e
    modules = dict(model.named_modules())
    # Every name of every tensor (a tied parameter or a shared module's tensors go by several), by identity.
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    ident: dict[str, int | str] = {tname: id(tensor) for tname, tensor in named}
    uses: dict[int | str, int] = {}  # tensor -> module calls (and get_attr reads) that use it
    groups = _Groups()
    vals: dict[torch.fx.Node, _Val] = {}
    out_group: dict[str, int] = {}  # a module called twice produces the same group
    entries: list[tuple[str, int, int, int, int]] = []  # (tensor, axis, gid, block, repeat)
    sites: list[tuple[str, int, int]] = []  # (module#call, axis, gid) of nonlinear outputs
    producers: list[tuple[str, int, int, str]] = []  # Linear/Conv/BN outputs (module, axis, gid, module#call)
    calls: dict[str, int] = {}  # calls of each module so far: a module called twice has two sites
    affine: list[tuple[str, int]] = []

    def val(a: Any) -> _Val:
        v = vals.get(a, _Val(None)) if isinstance(a, torch.fx.Node) else _Val(None)
        # a group merged into the fixed one (a stream added to the input) no longer moves: its values are
        # unpermuted from then on (their group's size would read as 0)
        return dataclasses.replace(v, gid=None) if v.gid is not None and groups.find(v.gid) == 0 else v

    def node_args(node: torch.fx.Node) -> list[torch.fx.Node]:
        return [a for a in node.all_input_nodes]

    def grouped_inputs(node: torch.fx.Node) -> list[_Val]:
        return [v for v in map(val, node_args(node)) if v.gid is not None]

    def unsupported(node: torch.fx.Node, what: str) -> PermutationSpecError:
        return PermutationSpecError(
            f"cannot derive a permutation spec for {type(model).__name__}: permuted units flow into {what}, which "
            "does not commute with a permutation of channels as far as this derivation knows. Supported: Linear, "
            "Conv1d/2d/3d and ConvTranspose (groups=1), BatchNorm, LayerNorm over the channel axis, pointwise "
            "activations, dropout, pooling, Flatten, addition of streams, unidirectional LSTM (its output and "
            "one layer of h_n / c_n)"
        )

    def new_group(name: str, n: int) -> int:
        if name not in out_group:
            out_group[name] = groups.new(n, f"P_{name}")
        return out_group[name]

    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
            used = [*modules[str(node.target)].parameters(), *modules[str(node.target)].buffers()]
        else:
            used = [tensor for tname, tensor in named if node.op == "get_attr" and tname == node.target]
        for used_id in {id(tensor) for tensor in used}:
            uses[used_id] = uses.get(used_id, 0) + 1
        if node.op == "placeholder" or node.op == "get_attr":
            vals[node] = _Val(None)
        elif node.op == "output":
            for v in grouped_inputs(node):
                groups.union(v.gid, 0, "output")  # type: ignore[arg-type]
        elif node.op == "call_module":
            name = str(node.target)
            mod = modules[name]
            v = val(node.args[0]) if node.args else _Val(None)
            extra = [a for a in node_args(node)[1:] if val(a).gid is not None]
            if extra:
                raise unsupported(node, f"module {name!r} ({type(mod).__name__}) through a second input")
            if isinstance(mod, nn.Linear):
                if v.gid is not None and v.axis == 1 and v.ndim != 2:  # channels first: the Linear takes the last axis
                    raise unsupported(node, f"Linear {name!r} over the last axis of a (B, C, ...) value")
                if v.gid is not None:
                    n = groups.size[groups.find(v.gid)]
                    if v.flat:
                        if mod.in_features % n:
                            raise unsupported(
                                node,
                                f"Linear {name!r} (in_features {mod.in_features} not a multiple of "
                                f"the {n} flattened channels)",
                            )
                        block = mod.in_features // n
                    elif mod.in_features == n:
                        block = 1
                    else:
                        raise unsupported(node, f"Linear {name!r} over an axis other than the channels")
                    entries.append((f"{name}.weight", 1, v.gid, block, 1))
                g = new_group(name, mod.out_features)
                entries.append((f"{name}.weight", 0, g, 1, 1))
                if mod.bias is not None:
                    entries.append((f"{name}.bias", 0, g, 1, 1))
                vals[node] = _Val(g, -1, ndim=2 if v.flat else v.ndim)  # a Linear keeps the rank of its input
                producers.append((name, -1, g, f"{name}#{calls[name] - 1}"))
            elif isinstance(mod, _CONV + _CONVT):
                if mod.groups != 1:
                    raise unsupported(node, f"grouped convolution {name!r} (groups={mod.groups})")
                if v.gid is not None and (v.flat or v.axis != 1):
                    raise unsupported(node, f"convolution {name!r} over a flattened or non-channel axis")
                tr = isinstance(mod, _CONVT)
                if v.gid is not None:
                    entries.append((f"{name}.weight", 0 if tr else 1, v.gid, 1, 1))
                g = new_group(name, mod.out_channels)
                entries.append((f"{name}.weight", 1 if tr else 0, g, 1, 1))
                if mod.bias is not None:
                    entries.append((f"{name}.bias", 0, g, 1, 1))
                vals[node] = _Val(g, 1, ndim=len(mod.kernel_size) + 2)  # batched (B, C, *spatial)
                producers.append((name, 1, g, f"{name}#{calls[name] - 1}"))
            elif isinstance(mod, _BN) or (isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1):
                if v.gid is not None:
                    if isinstance(mod, nn.LayerNorm) and v.axis != -1:
                        raise unsupported(node, f"LayerNorm {name!r} over an axis other than the channels")
                    if isinstance(mod, _BN) and v.axis == -1 and v.ndim not in (None, 2):  # BatchNorm takes axis 1
                        raise unsupported(node, f"{type(mod).__name__} {name!r} over axis 1 of a channels-last value")
                    block = 1
                    if v.flat:  # after Flatten: each channel is a block of H * W features, as for a Linear
                        n = groups.size[groups.find(v.gid)]
                        feats = mod.num_features if isinstance(mod, _BN) else mod.normalized_shape[0]
                        if feats % n:
                            raise unsupported(
                                node,
                                f"{type(mod).__name__} {name!r} ({feats} features, not a multiple of the {n} "
                                "flattened channels)",
                            )
                        block = feats // n
                    for t in ("weight", "bias", "running_mean", "running_var"):
                        if getattr(mod, t, None) is not None:
                            entries.append((f"{name}.{t}", 0, v.gid, block, 1))
                    if not v.flat:  # a flattened value has no per-unit channel axis to measure
                        producers.append((name, v.axis, v.gid, f"{name}#{calls[name] - 1}"))
                vals[node] = v
            elif isinstance(mod, nn.LSTM):
                if mod.bidirectional or mod.proj_size:
                    raise unsupported(node, f"LSTM {name!r} (bidirectional or projected LSTMs are not supported)")
                if v.gid is not None and (v.flat or v.axis != -1):
                    raise unsupported(node, f"LSTM {name!r} over an axis other than the features")
                prev, layer_groups = v.gid, []
                for k in range(mod.num_layers):
                    g = new_group(f"{name}.l{k}", mod.hidden_size)
                    layer_groups.append(g)
                    if prev is not None:
                        entries.append((f"{name}.weight_ih_l{k}", 1, prev, 1, 1))
                    # the four gates are stacked along axis 0: one permutation inside each
                    entries.append((f"{name}.weight_ih_l{k}", 0, g, 1, 4))
                    entries.append((f"{name}.weight_hh_l{k}", 0, g, 1, 4))
                    entries.append((f"{name}.weight_hh_l{k}", 1, g, 1, 1))
                    if mod.bias:
                        entries.append((f"{name}.bias_ih_l{k}", 0, g, 1, 4))
                        entries.append((f"{name}.bias_hh_l{k}", 0, g, 1, 4))
                    prev = g
                vals[node] = _Val(prev, -1, kind="lstm", layers=tuple(layer_groups))
            elif isinstance(mod, nn.Flatten):
                if v.gid is not None:
                    if mod.start_dim != 1 or v.axis != 1 or not _to_last(mod.end_dim, v.ndim):
                        raise unsupported(node, f"Flatten {name!r} (start_dim={mod.start_dim}, end_dim={mod.end_dim})")
                    vals[node] = _Val(v.gid, -1, flat=True, ndim=2)
                else:
                    vals[node] = v
            elif isinstance(mod, _POINTWISE):
                if v.gid is not None and not _pools_within_channels(type(mod).__name__, v):
                    raise unsupported(node, f"pooling {name!r} ({type(mod).__name__}) over the channel axis")
                if isinstance(mod, _PRELU) and mod.num_parameters > 1:
                    if v.gid is not None:
                        entries.append((f"{name}.weight", 0, v.gid, 1, 1))
                vals[node] = v
                if v.gid is not None and isinstance(mod, _NONLINEAR):
                    sites.append((f"{name}#{calls[name] - 1}", v.axis, v.gid))
            elif v.gid is None:
                vals[node] = _Val(None)  # an unknown module on unpermuted values: its tensors do not move
            else:
                raise unsupported(node, f"module {name!r} ({type(mod).__name__})")
        else:  # call_function / call_method
            gin = grouped_inputs(node)
            target = node.target
            fname = target if isinstance(target, str) else getattr(target, "__name__", str(target))
            if node.op == "call_function" and target is operator.getitem and val(node.args[0]).kind != "tensor":
                v, idx = val(node.args[0]), node.args[1]
                if v.kind == "lstm":  # (output (B, T, H), (h_n, c_n)); batched input assumed
                    vals[node] = _Val(v.gid, -1, ndim=3) if idx == 0 else _Val(None, -1, kind="state", layers=v.layers)
                elif v.kind == "state":  # h_n or c_n: (num_layers, B, H), layer k in row k
                    vals[node] = _Val(None, -1, kind="layers", layers=v.layers)
                elif isinstance(idx, int):  # one layer of h_n: (B, H)
                    vals[node] = _Val(v.layers[idx], -1, ndim=2)
                else:
                    raise unsupported(node, _where(node) + " (index h_n / c_n by one layer, e.g. h_n[-1])")
            elif not gin:
                vals[node] = _Val(None)
            elif node.op == "call_function" and target is operator.getitem:
                v, idx = val(node.args[0]), node.args[1]
                idx = idx if isinstance(idx, tuple) else (idx,)
                # out[:, -1] of an LSTM output (B, T, H): indexing that leaves the last (feature) axis alone
                if (
                    v.axis == -1
                    and v.ndim is not None
                    and not v.flat
                    and len(idx) < v.ndim
                    and all(isinstance(i, int | slice) for i in idx)
                ):
                    vals[node] = _Val(v.gid, -1, ndim=v.ndim - sum(isinstance(i, int) for i in idx))
                else:
                    raise unsupported(node, _where(node) + " (indexing that may touch the feature axis)")
            elif (node.op == "call_function" and target in _POINTWISE_FUNCS) or (
                node.op == "call_method" and target in _POINTWISE_METHODS
            ):
                if not _pools_within_channels(fname, val(node.args[0])):
                    raise unsupported(node, _where(node) + " (pooling over the channel axis)")
                vals[node] = val(node.args[0])
            elif (node.op == "call_function" and target in _BINARY_FUNCS) or (
                node.op == "call_method" and target in _BINARY_METHODS
            ):
                ins = [a for a in node.args if isinstance(a, torch.fx.Node)]
                first = gin[0].gid
                assert first is not None  # grouped_inputs keeps only values with a group
                g = first
                ranks = {val(a).ndim for a in ins if val(a).gid is not None}
                for a in ins:
                    ga = val(a).gid
                    g = groups.union(g, 0 if ga is None else ga, _where(node))
                if any(val(a).flat for a in ins) or len({val(a).axis for a in ins if val(a).gid is not None}) > 1:
                    raise unsupported(node, _where(node) + " mixing flattened and channel-axis values")
                vals[node] = _Val(g, gin[0].axis, ndim=ranks.pop() if len(ranks) == 1 else None)
            elif (node.op == "call_function" and target is torch.flatten) or (
                node.op == "call_method" and target in _FLATTEN_METHODS
            ):
                v = val(node.args[0])
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)  # torch.flatten(x): all
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                shape: Any = node.args[1:] if fname in ("view", "reshape") else ()
                shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
                if fname == "flatten" and start == 1 and _to_last(end, v.ndim) and v.axis == 1 and not v.flat:
                    vals[node] = _Val(v.gid, -1, flat=True, ndim=2)
                elif fname in ("view", "reshape") and len(shape) == 2 and v.axis == 1 and not v.flat:
                    # x.view(B, -1): read as a flatten, checked by the Linear; x.view(B, C, -1) keeps the channel
                    # axis apart and a Linear after it mixes positions, not channels
                    vals[node] = _Val(v.gid, -1, flat=True, ndim=2)
                else:
                    raise unsupported(node, _where(node))
            elif fname == "mean" or fname == "amax":
                dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
                keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
                reduced = _reduction(val(node.args[0]), dims, bool(keep))
                if reduced is None:
                    raise unsupported(node, _where(node) + " (reduction axes that cannot be told from the channels)")
                vals[node] = reduced  # pooled within each channel, or over the channels: then unpermuted
            elif fname in ("size", "dim", "getattr") or (node.op == "call_function" and target is getattr):
                vals[node] = _Val(None)  # shapes, not tensors
            else:
                raise unsupported(node, _where(node))

    # ----------------------------------------------------------------- shared tensors
    # A tensor used more than once (a module called twice, a tied parameter) must move the same way in every use:
    # one group per axis over all of them, and fixed if some use leaves that axis alone (an unpermuted input).
    per_axis: dict[tuple[int | str, int], list[tuple[str, int, int, int]]] = {}
    for tensor, axis, gid, block, repeat in entries:
        per_axis.setdefault((ident.get(tensor, tensor), axis), []).append((tensor, gid, block, repeat))
    for (tid, axis), found in per_axis.items():
        if len({(block, repeat) for _, _, block, repeat in found}) > 1:
            raise PermutationSpecError(
                f"cannot derive a permutation spec for {type(model).__name__}: tensor {found[0][0]!r} is used with "
                f"axis {axis} split into units of different sizes; it cannot carry one permutation"
            )
        where = f"tensor {found[0][0]!r} (axis {axis}, used {uses.get(tid, 1)} times)"
        g = found[0][1]
        for _, other, _, _ in found[1:]:
            g = groups.union(g, other, where)
        if len(found) < uses.get(tid, 1):
            groups.union(g, 0, where)
    aliases: dict[int | str, list[str]] = {}
    for tname, tid in ident.items():
        aliases.setdefault(tid, []).append(tname)

    # ----------------------------------------------------------------- assemble
    roots: dict[int, str] = {}
    for gid in range(1, len(groups.parent)):
        r = groups.find(gid)
        if r != 0 and r not in roots:
            roots[r] = groups.name[r]
    sizes = {roots[r]: groups.size[r] for r in sorted(roots)}
    seen: set[tuple[str, int]] = set()
    axes = []
    for tensor, axis, gid, block, repeat in entries:
        r = groups.find(gid)
        for name in aliases.get(ident.get(tensor, tensor), [tensor]):  # every name of a shared tensor moves with it
            if r == 0 or (name, axis) in seen:
                continue
            seen.add((name, axis))
            axes.append(AxisPerm(tensor=name, axis=axis, group=roots[r], block=block, repeat=repeat))

    def label(call: str) -> str:  # "act#1": the second call of a module called twice; "act" if called once
        name = call.rpartition("#")[0]
        return call if calls[name] > 1 else name

    site_map: dict[str, list[tuple[str, int]]] = {}
    for call, axis, gid in sites:
        r = groups.find(gid)
        if r:
            site_map.setdefault(roots[r], []).append((label(call), axis))
    for _, axis, gid, call in producers:
        r = groups.find(gid)
        if r and roots[r] not in site_map:
            site_map.setdefault(f"_prod_{roots[r]}", []).append((label(call), axis))
    sites_out = {key: tuple(at) for key, at in site_map.items() if not key.startswith("_prod_")}
    for key, at in site_map.items():
        if key.startswith("_prod_") and key[6:] not in sites_out:
            sites_out[key[6:]] = (at[-1],)
    # REPAIR sites: a Linear/Conv producing a permuted group, or the BatchNorm right after it.
    node_of = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
    for name, _, gid, _ in producers:
        r = groups.find(gid)
        mod = modules[name]
        if not r or isinstance(mod, _BN + (nn.LayerNorm,)):
            continue
        users = list(node_of[name].users)
        nxt = users[0] if len(users) == 1 and users[0].op == "call_module" else None
        if nxt is not None and isinstance(modules[str(nxt.target)], _BN):
            affine.append((str(nxt.target), gid))
        else:
            affine.append((name, gid))
    affine_sites = tuple((m, roots[groups.find(g)]) for m, g in affine)
    return PermutationSpec(sizes=sizes, axes=tuple(axes), sites=sites_out, affine_sites=affine_sites)
