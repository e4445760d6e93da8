"""Aligning two networks' hidden units: weight matching, activation matching and REPAIR.

Two networks trained from different seeds compute similar features in different orders. Aligning
``b`` to ``a`` finds a permutation of ``b``'s units (a :mod:`landscape.analyze.permutation` permutation) that
makes the two close, after which the straight line between them often has a much lower loss barrier.

* :func:`weight_matching` (Ainsworth, Hayase and Srinivasa, *Git Re-Basin*, ICLR 2023, §3.2, Alg. 1):
  maximize ``sum_t <W_a[t], P(W_b)[t]>`` over permutations by coordinate descent: one group at a time,
  the others fixed, the objective is linear in that group's permutation and a linear assignment
  (``scipy.optimize.linear_sum_assignment``) solves it exactly, so no sweep decreases it.
* :func:`activation_matching` (Git Re-Basin §3.1): per group, the linear assignment that maximizes the
  summed correlation of the two networks' activations over a dataset (streamed: running sums in float64).
* :func:`repair` (Jordan et al., *REPAIR*, ICLR 2023, §4): rescale each hidden channel of an
  interpolated network so its mean and standard deviation over the data are the interpolation of the
  endpoints' (the variance collapse of interpolated networks undone), folded into the affine layer
  before the nonlinearity.

Example:
    >>> from landscape.analyze.permutation import random_permutation
    >>> a = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    >>> spec = permutation_spec(a)
    >>> b = apply_permutation(spec, random_permutation(spec, seed=1), a)
    >>> res = weight_matching(a, b)
    >>> aligned = res.apply(b)
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), aligned.parameters()))
    True
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from torch import Tensor, nn

from landscape._batch import describe_data
from landscape._options import keyword_values, shows_keywords
from landscape.analyze.permutation import (
    apply_permutation,
    check_permutation,
    identity_permutation,
    permute_tensor,
)
from landscape.analyze.permutation_spec import AxisPerm, PermutationSpec
from landscape.analyze.permutation_tracing import permutation_spec
from landscape.params import preserved_mode
from landscape.results import Provenance, Result, register_result

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AlignmentResult",
    "ActivationOptions",
    "weight_matching",
    "matching_objective",
    "activation_correlations",
    "activation_matching",
    "repair",
    "interpolate_models",
]

ModelOrState = nn.Module | Mapping[str, Tensor]
DataLike = tuple[Tensor, Tensor] | Tensor | Iterable[Any]


class ActivationOptions(TypedDict, total=False):
    """How activations are collected, by :func:`activation_correlations` and :func:`activation_matching`.

    Attributes:
        spec: Permutation spec (default: derived from ``a``).
        batch_size: Batch size for tensor data (default 256).
        train: Run in train mode (BatchNorm batch statistics); default eval mode.
        progress: Show a tqdm bar over batches (default ``False``).
    """

    spec: PermutationSpec | None
    batch_size: int | None
    train: bool
    progress: bool


_ACTIVATION_DEFAULTS: dict[str, Any] = {"batch_size": 256, "train": False, "progress": False}


@register_result
@dataclasses.dataclass(frozen=True)
class AlignmentResult(Result):
    """A permutation aligning ``b`` to ``a``, and how it was found.

    Attributes:
        permutation: Group -> ``(n,)`` int64 permutation (``new[i] = old[p[i]]``) to apply to ``b``.
        objective: ``(sweeps + 1,)`` weight matching: the objective at the start and after each sweep;
            activation matching: ``(1,)`` the summed correlation of matched units.
        method: ``"weight"`` or ``"activation"``.
        spec: The permutation spec (``PermutationSpec.to_dict()``).
        per_group: Group -> mean correlation of its matched units (activation matching), for diagnosis; empty for
            weight matching, whose objective couples the groups.
        provenance: Seed, data, version and options.
    """

    _dims = {"permutation.*": ("{key}",), "objective": ("sweep",)}
    _thumb = ("objective", "line")

    permutation: dict[str, np.ndarray]
    objective: np.ndarray
    method: str
    spec: dict[str, Any]
    per_group: dict[str, float] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    @property
    def perm(self) -> dict[str, Tensor]:
        """The permutation as ``{group: LongTensor}``."""
        return {g: torch.as_tensor(np.asarray(p), dtype=torch.long) for g, p in self.permutation.items()}

    @property
    def permutation_spec(self) -> PermutationSpec:
        """The spec as an object."""
        return PermutationSpec.from_dict(self.spec)

    def apply(self, target: nn.Module | Mapping[str, Tensor] | Tensor | np.ndarray, *, layout: Any = None) -> Any:
        """Apply the permutation to ``b`` (a model, dict or flat vector, tensor or numpy, out of place)."""
        return apply_permutation(self.permutation_spec, self.perm, target, layout=layout)


def _state(x: ModelOrState, params_only: bool) -> dict[str, Tensor]:
    if isinstance(x, nn.Module):
        src = dict(x.named_parameters()) if params_only else x.state_dict(keep_vars=True)
        return {k: v.detach() for k, v in src.items()}
    return {k: v.detach() for k, v in x.items()}


def _spec_for(a: ModelOrState, spec: PermutationSpec | None) -> PermutationSpec:
    if spec is not None:
        return spec
    if not isinstance(a, nn.Module):
        raise ValueError("pass spec= when the endpoints are dicts (the spec is derived from a model)")
    return permutation_spec(a)


def matching_objective(
    spec: PermutationSpec,
    a: nn.Module | Mapping[str, Tensor],
    b: nn.Module | Mapping[str, Tensor],
    perm: Mapping[str, Tensor] | None = None,
) -> float:
    """The weight-matching objective ``sum_t <a[t], P(b)[t]>`` over the parameters, in float64.

    Args:
        spec: The permutation spec.
        a: Reference model (or dict of tensors).
        b: Model to permute.
        perm: Permutation of ``b`` (default identity).

    Returns:
        The Frobenius inner product summed over every parameter tensor.
    """
    A, B = _state(a, True), _state(b, True)
    Pb = apply_permutation(spec, identity_permutation(spec) if perm is None else perm, B)
    return float(sum(float((A[k].double() * Pb[k].double()).sum()) for k in A))


def _unit_rows(t: Tensor, axis: int, block: int, n: int, repeat: int = 1) -> Tensor:
    """``t`` as ``(n, -1)``: the entries of unit ``i`` along ``axis`` (``repeat`` x ``block`` per unit) in row ``i``."""
    shape = list(t.shape)
    t = t.reshape(*shape[:axis], repeat, n, block, *shape[axis + 1 :])
    return t.movedim(axis + 1, 0).reshape(n, -1)


def weight_matching(
    a: nn.Module | Mapping[str, Tensor],
    b: nn.Module | Mapping[str, Tensor],
    *,
    spec: PermutationSpec | None = None,
    max_sweeps: int = 100,
    init: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> AlignmentResult:
    """Permute ``b``'s units to maximize the inner product of its weights with ``a``'s (Git Re-Basin Alg. 1).

    Each sweep visits the groups in a random order (seeded); for one group ``g`` with the others
    fixed, the objective is ``sum_ij C[i, j] [P_g]_ij`` with ``C[i, j] = sum_t <a_t unit i, P_{-g}(b_t) unit j>``
    over every tensor axis ``g`` moves, solved exactly by a linear assignment. The sweep loop stops when a
    sweep improves by no more than ``1e-12`` relative. Only parameters enter the objective (buffers
    follow the permutation when it is applied). Costs are accumulated in float64.

    Args:
        a: Reference model (or a dict of its parameters; then pass ``spec``). Only read.
        b: Model to align to ``a``. Only read.
        spec: Permutation spec (default: derived from ``a``).
        max_sweeps: Upper bound on sweeps over all groups.
        init: Starting permutation (default identity).
        seed: Seed of the group order.
        progress: Show a tqdm bar over sweeps.

    Returns:
        An :class:`AlignmentResult`; ``objective[k]`` is the objective after ``k`` sweeps
        (non-decreasing when no tensor carries one group on two axes).

    Raises:
        PermutationSpecError: If the spec cannot be derived from ``a``.
        ValueError: If ``a`` and ``b`` differ in architecture.
    """
    from scipy.optimize import linear_sum_assignment
    from tqdm.auto import tqdm

    spec = _spec_for(a, spec)
    A, B = _state(a, True), _state(b, True)
    if A.keys() != B.keys() or any(A[k].shape != B[k].shape for k in A):
        raise ValueError("a and b have different parameter names or shapes; weight matching needs one architecture")
    A = {k: v.double() for k, v in A.items()}
    B = {k: v.double() for k, v in B.items()}
    perm = check_permutation(spec, identity_permutation(spec) if init is None else init)
    by_tensor: dict[str, list[AxisPerm]] = {}
    for ax in spec.axes:
        if ax.tensor in A:
            by_tensor.setdefault(ax.tensor, []).append(ax)
    gen = np.random.default_rng(seed)
    groups = [g for g in spec.groups if any(ax.group == g for axs in by_tensor.values() for ax in axs)]

    def objective() -> float:
        return matching_objective(spec, A, B, perm)

    # a's unit rows never change: cut them once (reshaping a moved axis copies the tensor)
    a_rows = {
        (ax.tensor, ax.axis): _unit_rows(A[ax.tensor], ax.axis, ax.block, spec.sizes[ax.group], ax.repeat)
        for axs in by_tensor.values()
        for ax in axs
    }

    history = [objective()]
    bar = tqdm(total=max_sweeps, desc="weight matching", unit="sweep", disable=not progress, leave=False)
    with torch.no_grad(), bar:
        for _ in range(max_sweeps):
            for g in gen.permutation(groups):
                n = spec.sizes[g]
                C = torch.zeros(n, n, dtype=torch.float64)
                for t, axs in by_tensor.items():
                    mine = [ax for ax in axs if ax.group == g]
                    if not mine:
                        continue
                    others = [ax for ax in axs if ax.group != g]
                    Bt = permute_tensor(B[t], others, perm)  # the other axes at their current permutation
                    for ax in mine:  # one group on two axes (rare): the other axis at its current value
                        Bo = permute_tensor(Bt, [x for x in mine if x is not ax], perm)
                        C.addmm_(a_rows[(t, ax.axis)], _unit_rows(Bo, ax.axis, ax.block, n, ax.repeat).T)
                _, cols = linear_sum_assignment(C.numpy(), maximize=True)
                new = torch.as_tensor(cols, dtype=torch.long)
                # Keep the old permutation on ties: a re-solve must never lower the objective by rounding.
                idx = torch.arange(n)
                if float(C[idx, new].sum()) > float(C[idx, perm[g]].sum()):
                    perm[g] = new
            history.append(objective())
            bar.update(1)
            if history[-1] - history[-2] <= 1e-12 * max(1.0, abs(history[-2])):
                break
    final = {g: p.numpy().astype(np.int64) for g, p in perm.items()}
    prov = Provenance.here(seed=seed, method="weight_matching", sweeps=len(history) - 1)
    return AlignmentResult(
        permutation=final,
        objective=np.asarray(history),
        method="weight",
        spec=spec.to_dict(),
        per_group={},
        provenance=prov,
    )


# =========================================================================== activations
def _input_batches(model: nn.Module, data: DataLike, batch_size: int | None) -> Iterable[tuple[tuple, dict]]:
    """The data's model inputs, batch by batch, as ``(positional inputs, keyword inputs)`` in ``model``'s dtype.

    Any data every analyzer takes (a tensor pair, a ``Dataset``, a ``DataLoader``, tuple or mapping batches, numpy
    arrays) is read through a :class:`~landscape.problem.Problem` whose loss ignores the targets (only the inputs
    matter here, so no label check applies); an input tensor ``X`` alone is cut into batches of ``batch_size``.
    """
    from landscape.problem import Problem

    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, Tensor):
        p = next(iter(model.parameters()))
        x = data.to(device=p.device, dtype=p.dtype if data.is_floating_point() else data.dtype)
        step = batch_size or max(len(x), 1)
        return (((x[i : i + step],), {}) for i in range(0, len(x), step))
    prob = Problem(model, data, lambda outputs, targets: outputs.sum(), loss_form="outputs", batch_size=batch_size)
    return ((b.inputs, b.kwargs) for b in prob.batches())


def _hooked_copy(model: nn.Module, names: Sequence[tuple[str, int]], store: dict[str, Tensor]) -> nn.Module:
    """A private copy of ``model`` whose listed modules write their outputs, as ``(-1, C)``, to ``store``.

    A site ``"act#k"`` is the ``k``-th call of module ``act`` in one forward (one activation module reused by
    several layers); a plain name holds the module's last call.
    """
    new = copy.deepcopy(model)
    mods = dict(new.named_modules())
    calls: dict[str, int] = {}
    new.register_forward_pre_hook(lambda *_: calls.clear())  # calls are counted per forward
    by_module: dict[str, list[tuple[str, int]]] = {}
    for site, axis in names:
        base, sep, k = site.rpartition("#")
        name = base if sep and base in mods and k.isdigit() else site
        by_module.setdefault(name, []).append((site, axis))
    for name, sites in by_module.items():

        def hook(_m: nn.Module, _i: Any, out: Tensor, name: str = name, sites: list = sites) -> None:
            k = calls[name] = calls.get(name, -1) + 1
            for site, axis in sites:
                if site in (name, f"{name}#{k}"):
                    o = out.detach()
                    store[site] = o.movedim(axis, -1).reshape(-1, o.shape[axis])

        mods[name].register_forward_hook(hook)
    return new


@dataclasses.dataclass
class _Moments:
    """Running sums of two sets of activations, ``(N, n)`` each, in float64.

    ``sums``: ``[sum a, sum b, sum a^2, sum b^2, a^T b]``, empty before the first batch.
    """

    n: int = 0
    sums: list[Tensor] = dataclasses.field(default_factory=list)

    def add(self, x: Tensor, y: Tensor) -> None:
        x, y = x.double(), y.double()
        parts = [x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), x.T @ y]
        self.sums = [u + v for u, v in zip(self.sums, parts)] if self.sums else parts
        self.n += int(x.shape[0])

    def corr(self, eps: float) -> Tensor:
        sa, sb, saa, sbb, sab = self.sums
        ma, mb = sa / self.n, sb / self.n
        cov = sab / self.n - ma[:, None] * mb[None, :]
        va = (saa / self.n - ma**2).clamp_min(0)
        vb = (sbb / self.n - mb**2).clamp_min(0)
        return cov / ((va.sqrt()[:, None] + eps) * (vb.sqrt()[None, :] + eps))


@shows_keywords(ActivationOptions, _ACTIVATION_DEFAULTS)
def activation_correlations(
    a: nn.Module, b: nn.Module, data: DataLike, *, eps: float = 0.0, **options: Unpack[ActivationOptions]
) -> dict[str, np.ndarray]:
    """Correlations between ``a``'s and ``b``'s units of each group over a dataset, streamed in float64.

    For a group with activation sites (the sites of :attr:`PermutationSpec.sites`: the outputs of its
    nonlinearity modules, ``nn.ReLU`` say; with a functional nonlinearity, ``F.relu``, the outputs of the layers
    producing the group, its pre-activations; every spatial position of a convolution counts as one observation),
    ``corr[i, j]`` is the Pearson correlation of ``a``'s unit ``i`` and ``b``'s unit ``j`` over all observations
    of all its sites (a residual stream's sites are stacked).

    Args:
        a: First model (only read; a private copy is hooked).
        b: Second model, same architecture.
        data: An input tensor ``X``, or the data as every analyzer takes it: a tensor pair ``(X, y)``, a ``Dataset``,
            a ``DataLoader`` or an iterable of tuple or mapping batches (only the inputs are used).
        eps: Added to each standard deviation (0: a dead unit gives NaN correlations, set to 0 when matching).
        **options: How activations are collected (:class:`ActivationOptions`): ``spec``, ``batch_size``,
            ``train``, ``progress``.

    Returns:
        Group -> ``(n, n)`` correlation matrix.

    Raises:
        PermutationSpecError: If the spec cannot be derived.
    """
    from tqdm.auto import tqdm

    o = keyword_values("activation_correlations", options, ActivationOptions, _ACTIVATION_DEFAULTS)
    spec, train = _spec_for(a, o["spec"]), o["train"]
    sites = [s for g in spec.groups for s in spec.sites.get(g, ())]
    sa: dict[str, Tensor] = {}
    sb: dict[str, Tensor] = {}
    ca, cb = _hooked_copy(a, sites, sa), _hooked_copy(b, sites, sb)
    moments = {g: _Moments() for g in spec.groups if spec.sites.get(g)}
    with torch.no_grad(), preserved_mode(ca, train), preserved_mode(cb, train):
        batches = _input_batches(a, data, o["batch_size"])
        for inputs, kwargs in tqdm(batches, desc="activations", disable=not o["progress"], leave=False):
            ca(*inputs, **kwargs)
            cb(*inputs, **kwargs)
            for g, m in moments.items():
                for name, _ in spec.sites[g]:
                    m.add(sa[name], sb[name])
    return {g: m.corr(eps).numpy() for g, m in moments.items()}


@shows_keywords(ActivationOptions, _ACTIVATION_DEFAULTS)
def activation_matching(
    a: nn.Module, b: nn.Module, data: DataLike, **options: Unpack[ActivationOptions]
) -> AlignmentResult:
    """Permute ``b``'s units to maximize the correlation of its activations with ``a``'s (Git Re-Basin §3.1).

    Each group is solved independently: the linear assignment on :func:`activation_correlations`
    (NaN correlations of dead units count as 0). Groups without activation sites keep the identity.

    Args:
        a: Reference model (only read).
        b: Model to align (only read).
        data: As for :func:`activation_correlations`: an input tensor, a tensor pair, a ``Dataset``, a
            ``DataLoader`` or an iterable of tuple or mapping batches.
        **options: How activations are collected (:class:`ActivationOptions`): ``spec``, ``batch_size``,
            ``train``, ``progress``.

    Returns:
        An :class:`AlignmentResult` with ``method="activation"``; ``objective`` holds the summed matched
        correlation, ``per_group`` the mean matched correlation of each group.
    """
    from scipy.optimize import linear_sum_assignment

    o = keyword_values("activation_matching", options, ActivationOptions, _ACTIVATION_DEFAULTS)
    spec = o["spec"] = _spec_for(a, o["spec"])
    corr = activation_correlations(a, b, data, **o)
    perm = {g: p.numpy().astype(np.int64) for g, p in identity_permutation(spec).items()}
    total, per = 0.0, {}
    for g, c in corr.items():
        c = np.nan_to_num(c, nan=0.0)
        rows, cols = linear_sum_assignment(c, maximize=True)
        perm[g] = cols.astype(np.int64)
        total += float(c[rows, cols].sum())
        per[g] = float(c[rows, cols].mean())
    prov = Provenance.here(data=describe_data(data), method="activation_matching", train=o["train"])
    return AlignmentResult(
        permutation=perm,
        objective=np.array([total]),
        method="activation",
        spec=spec.to_dict(),
        per_group=per,
        provenance=prov,
    )


# =========================================================================== REPAIR
def interpolate_models(a: nn.Module, b: nn.Module, alpha: float) -> nn.Module:
    """A new model at ``(1 - alpha) a + alpha b``: parameters and floating buffers interpolated (float64 sums).

    Alpha 0 and 1 give ``a`` and ``b`` bitwise; integer buffers come from ``a``.
    """
    new = copy.deepcopy(a)
    sa, sb = a.state_dict(), b.state_dict()
    with torch.no_grad():
        # from a's values, not the copy's: a tied tensor comes under each of its names and must be written once
        for k, v in new.state_dict(keep_vars=True).items():
            if not v.is_floating_point() or alpha == 0:
                continue
            w = sb[k] if alpha == 1 else ((1 - alpha) * sa[k].double() + alpha * sb[k].double()).to(v.dtype)
            v.copy_(w)
    return new


def _site_stats(
    model: nn.Module, sites: Sequence[tuple[str, int]], data: DataLike, batch_size: int | None, train: bool
) -> dict[str, tuple[Tensor, Tensor]]:
    store: dict[str, Tensor] = {}
    m = _hooked_copy(model, sites, store)
    sums: dict[str, list[Any]] = {s: [0, 0.0, 0.0] for s, _ in sites}
    with torch.no_grad(), preserved_mode(m, train):
        for inputs, kwargs in _input_batches(model, data, batch_size):
            m(*inputs, **kwargs)
            for s, _ in sites:
                o = store[s].double()
                sums[s][0] += o.shape[0]
                sums[s][1] = sums[s][1] + o.sum(0)
                sums[s][2] = sums[s][2] + (o * o).sum(0)
    out = {}
    for s, (n, s1, s2) in sums.items():
        mean = s1 / n
        out[s] = (mean, (s2 / n - mean**2).clamp_min(0).sqrt())
    return out


_CHANNEL_AXIS_1 = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
)


def repair(
    a: nn.Module,
    b: nn.Module,
    data: DataLike,
    *,
    alpha: float = 0.5,
    spec: PermutationSpec | None = None,
    batch_size: int | None = 256,
    eps: float = 1e-8,
) -> nn.Module:
    """The interpolated network ``(1 - alpha) a + alpha b`` with its hidden channels' statistics repaired.

    At every REPAIR site (the last affine layer before each nonlinearity of a permuted group: a
    Linear/Conv, or the BatchNorm after it), each channel's mean and standard deviation over ``data``
    are set to ``(1 - alpha)`` times ``a``'s plus ``alpha`` times ``b``'s (Jordan et al. 2023, eq. 4), by
    rescaling that layer's weight and shifting its bias. Sites are repaired in forward order, each
    measured after the earlier ones are fixed, so the final network matches every target exactly
    (in eval mode, over ``data``). ``b`` should already be aligned to ``a``.

    Args:
        a: First endpoint (only read).
        b: Second endpoint, aligned (only read).
        data: The statistics' data, as for :func:`activation_correlations` (inputs only are used).
        alpha: Interpolation coefficient.
        spec: Permutation spec (default: derived from ``a``), for its REPAIR sites.
        batch_size: Batch size for tensor data.
        eps: Floor of the measured standard deviation (a dead channel keeps its scale).

    Returns:
        A new model (eval-mode statistics; BatchNorm running statistics of the repaired sites are the
        interpolated ones, the affine parameters carry the correction).

    Raises:
        ValueError: If a site's layer has no bias to shift.
    """
    spec = _spec_for(a, spec)
    if isinstance(data, Iterator):  # read once, then passed over once per site: keep a one-shot iterator's batches
        data = list(data)
    mods_a = dict(a.named_modules())
    sites = []
    for name, _ in spec.affine_sites:
        # channels: axis 1 of a convolution's (transposed ones too) and BatchNorm's output, the last of a Linear's
        sites.append((name, 1 if isinstance(mods_a[name], _CHANNEL_AXIS_1) else -1))
    ta = _site_stats(a, sites, data, batch_size, False)
    tb = _site_stats(b, sites, data, batch_size, False)
    new = interpolate_models(a, b, alpha)
    mods = dict(new.named_modules())
    for name, axis in sites:
        mu_t = (1 - alpha) * ta[name][0] + alpha * tb[name][0]
        sd_t = (1 - alpha) * ta[name][1] + alpha * tb[name][1]
        mu, sd = _site_stats(new, [(name, axis)], data, batch_size, False)[name]
        scale = sd_t / sd.clamp_min(eps)
        mod = mods[name]
        bias = getattr(mod, "bias", None)
        if bias is None:
            raise ValueError(f"REPAIR site {name!r} ({type(mod).__name__}) has no bias to shift")
        with torch.no_grad():
            w = mod.weight
            shape = (-1,) + (1,) * (w.dim() - 1)
            if isinstance(mod, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
                shape = (1, -1) + (1,) * (w.dim() - 2)
            # out' = scale * (out - mu) + mu_t  ==  (scale W) x + scale (b - mu) + mu_t
            w.copy_((w.double() * scale.view(shape)).to(w.dtype))
            bias.copy_((scale * (bias.double() - mu) + mu_t).to(bias.dtype))
    return new
