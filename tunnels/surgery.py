"""Tunnel surgery: open, close and reorganize hidden units and filters, always out of place.

Implements the structural modifications of "Escaping Flat Areas via Function-Preserving Structural
Network Modifications" (anonymous, ICLR 2019 submission; "Tunnels"), Sections 2.3-3.2. The sites
(the supported producer / consumer pairs, what may sit between them, how names resolve to modules)
and the event records live in :mod:`tunnels.sites`; the matrix A and the
choice of the outbound split live in :mod:`tunnels.split`.

Opening (Section 2.3): clone unit ``u`` into a new unit ``u'`` appended after the existing units,
``theta_u' = theta_u`` (inbound weights, bias, BatchNorm channel), and split every outbound weight
``w`` of ``u`` as ``lambda * w`` (kept by ``u``) and ``(1 - lambda) * w`` (given to ``u'``). The
consumer's output is unchanged for every input. Closing (Section 3.1): merge ``u'`` into ``u`` by
averaging inbound and summing outbound weights, then delete ``u'``. Reorganization (Section 3.2,
README item 5): close ``u2`` onto ``u1`` without deleting it (``u2`` keeps a copy of the merged
inbound weights and zero outbound weights), then clone ``u`` into the slot of ``u2``.

What preserves the function: opening always (up to float rounding of ``lambda * w``); closing right
after opening restores the parameters; closing after training, and the merge half of a
reorganization, preserve it only when the two units are redundant (equal inbound weights, Sussmann's
case 1c). So a reorganization equals "merge ``u2`` into ``u1``" as a function, and equals the
original function when ``u1`` and ``u2`` were redundant. Closing the reorganized clone again
(``close_units(..., [(u, u2)], remove=False)``) gives back the merged network as a function, and parameter
for parameter when ``u`` is ``u1`` (otherwise the freed slot keeps a copy of ``u``'s inbound weights
rather than of the merged unit's; its outbound weights are zero either way).

Floating point: the split is computed as ``a = fl(lambda * w)``, ``b = w - a`` when
``lambda >= 1/2`` and ``b = fl((1 - lambda) * w)``, ``a = w - b`` otherwise. For ``lambda`` in
``[-1, 2]`` the subtraction is exact (Sterbenz), so ``a + b == w`` bitwise and closing right after
opening restores the network exactly, not only to rounding.

Every function here returns a new model; the given one is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from landscape._options import parse_option, shows_keywords
from tunnels.sites import (
    SUPPORTED_PAIRS,
    EventKind,
    TunnelEvent,
    TunnelSite,
    UnitChange,
    UnsupportedSiteError,
    find_sites,
    module_order,
    resolve_site,
)
from tunnels.split import SOURCE_DEFAULTS, SplitSource, split_source

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tunnels.split import LambdaMode, SplitStats

__all__ = [
    "open_units",
    "close_units",
    "reorganize_units",
    "open_tunnels",
    "close_tunnels",
    "reorganize",
]

UnitsSpec = int | Mapping[Any, int | Sequence[int]]


# ============================================================================ tensor edits
def _set_param(module: nn.Module, attr: str, value: Tensor) -> None:
    old = getattr(module, attr)
    setattr(module, attr, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


def _edit_site(
    model: nn.Module, site: TunnelSite, in_fn: Callable[[Tensor], Tensor], out_fn: Callable[[Tensor], Tensor]
) -> None:
    """Apply ``in_fn`` to every per-unit tensor (dim 0) and ``out_fn`` to the consumer weight as ``(V, U, Q)``."""
    prod = model.get_submodule(site.producer)
    with torch.no_grad():
        for attr in ("weight", "bias"):
            if getattr(prod, attr) is not None:
                _set_param(prod, attr, in_fn(getattr(prod, attr).detach()))
        units = prod.weight.shape[0]
        if isinstance(prod, nn.Conv2d):
            prod.out_channels = units
        else:
            prod.out_features = units
        for name in site.norms:
            bn = model.get_submodule(name)
            for attr in ("weight", "bias"):
                if getattr(bn, attr) is not None:
                    _set_param(bn, attr, in_fn(getattr(bn, attr).detach()))
            for attr in ("running_mean", "running_var"):
                if getattr(bn, attr) is not None:
                    setattr(bn, attr, in_fn(getattr(bn, attr)).contiguous())
            bn.num_features = units
        cons = model.get_submodule(site.consumer)
        w = cons.weight.detach()
        w3 = out_fn(w.reshape(w.shape[0], site.n_units, -1))
        if isinstance(cons, nn.Conv2d):
            _set_param(cons, "weight", w3.reshape(w.shape[0], units, *w.shape[2:]))
            cons.in_channels = units
        else:
            _set_param(cons, "weight", w3.reshape(w.shape[0], -1))
            cons.in_features = w3.shape[1] * w3.shape[2]


def _split(w: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)`` with ``a ~ lam * w``, ``b ~ (1 - lam) * w`` and ``a + b == w`` exactly for ``lam`` in [-1, 2]."""
    big = lam >= 0.5
    a_mul, b_mul = lam * w, (1 - lam) * w
    return torch.where(big, a_mul, w - b_mul), torch.where(big, w - a_mul, b_mul)


def _check_units(units: Sequence[int], n: int, what: str) -> list[int]:
    out = [int(u) for u in units]
    bad = [u for u in out if not 0 <= u < n]
    if bad:
        raise IndexError(f"{what} {bad} out of range for a layer of {n} units")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} {out} has repeats; each unit can be used once per event")
    return out


def _lambda_matrix(lambdas: Any, n: int, site: TunnelSite, dtype: torch.dtype, device: torch.device) -> Tensor:
    lam = torch.as_tensor(lambdas, dtype=torch.float64)
    if lam.dim() == 1:
        lam = lam.expand(n, -1)
    if tuple(lam.shape) != (n, site.n_out):
        raise ValueError(
            f"lambdas for {n} unit(s) of {site.producer!r} must have shape ({n}, {site.n_out}) "
            f"(V={site.n_consumer} consumer units x Q={site.spatial} weights each), got {tuple(lam.shape)}"
        )
    return lam.to(dtype=dtype, device=device)


def _open_site(model: nn.Module, site: TunnelSite, units: list[int], lam: Tensor) -> list[int]:
    idx = torch.tensor(units, dtype=torch.long)
    lam3 = lam.reshape(len(units), site.n_consumer, site.spatial).transpose(0, 1)

    def out_fn(w3: Tensor) -> Tensor:
        a, b = _split(w3[:, idx], lam3)
        w3 = w3.clone()
        w3[:, idx] = a
        return torch.cat([w3, b], dim=1)

    _edit_site(model, site, lambda t: torch.cat([t, t[idx]]), out_fn)
    return list(range(site.n_units, site.n_units + len(units)))


def _close_site(model: nn.Module, site: TunnelSite, pairs: list[tuple[int, int]], remove: bool) -> None:
    keep = torch.tensor([k for k, _ in pairs], dtype=torch.long)
    drop = torch.tensor([d for _, d in pairs], dtype=torch.long)
    mask = torch.ones(site.n_units, dtype=torch.bool)
    mask[drop] = False

    def in_fn(t: Tensor) -> Tensor:
        t = t.clone()
        t[keep] = (t[keep] + t[drop]) / 2
        if remove:
            return t[mask]
        t[drop] = t[keep]
        return t

    def out_fn(w3: Tensor) -> Tensor:
        w3 = w3.clone()
        w3[:, keep] = w3[:, keep] + w3[:, drop]
        if remove:
            return w3[:, mask]
        w3[:, drop] = 0
        return w3

    _edit_site(model, site, in_fn, out_fn)


def _clone_into(model: nn.Module, site: TunnelSite, units: list[int], slots: list[int], lam: Tensor) -> None:
    src, dst = torch.tensor(units, dtype=torch.long), torch.tensor(slots, dtype=torch.long)
    lam3 = lam.reshape(len(units), site.n_consumer, site.spatial).transpose(0, 1)

    def in_fn(t: Tensor) -> Tensor:
        t = t.clone()
        t[dst] = t[src]
        return t

    def out_fn(w3: Tensor) -> Tensor:
        a, b = _split(w3[:, src], lam3)
        w3 = w3.clone()
        w3[:, src], w3[:, dst] = a, b
        return w3

    _edit_site(model, site, in_fn, out_fn)


def _check_count(n: int, what: str) -> None:
    """A number of units or merges: a negative one would slice ``[:n]`` into all but ``|n|`` of them."""
    if n < 0:
        raise ValueError(f"{what}={n}: a number of units or merges must be >= 0 (or pass explicit indices)")


def _check_pairs(pairs: Iterable[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    out = [(int(a), int(b)) for a, b in pairs]
    _check_units([u for p in out for u in p], n, "units of the pairs")
    return out


def _dtype_device(model: nn.Module, site: TunnelSite) -> tuple[torch.dtype, torch.device]:
    w = model.get_submodule(site.consumer).weight
    return w.dtype, w.device


def _applied(lam: Tensor) -> list[tuple[float, ...]]:
    return [tuple(row) for row in lam.double().tolist()]


# ============================================================================ explicit surgery
def open_units(model: nn.Module, site: Any, units: Sequence[int], lambdas: Any) -> tuple[nn.Module, TunnelEvent]:
    """Clone units with a given outbound split (no data needed); returns a new, larger model.

    Args:
        model: The network (not modified).
        site: Producer name, ``(producer, consumer)`` or a :class:`TunnelSite`.
        units: Indices of the units to clone, distinct; clone ``i`` gets index ``U + i``.
        lambdas: Split kept by each unit, shape ``(n, L)`` or ``(L,)`` for all, ``L = V * Q`` in the
            consumer's weight order (consumer unit major).

    Returns:
        ``(new_model, event)``; the event has ``kind="open"`` and ``mode="given"``.

    Raises:
        IndexError, ValueError: On bad unit indices or a wrongly shaped ``lambdas``.
        UnsupportedSiteError: If the site is not supported.
    """
    new = copy.deepcopy(model)
    s = resolve_site(new, site)
    units = _check_units(units, s.n_units, "units")
    lam = _lambda_matrix(lambdas, len(units), s, *_dtype_device(new, s))
    clones = _open_site(new, s, units, lam)
    changes = tuple(UnitChange(s.producer, s.consumer, u, c, lv) for u, c, lv in zip(units, clones, _applied(lam)))
    return new, TunnelEvent(EventKind.OPEN.value, changes)


def close_units(
    model: nn.Module, site: Any, pairs: Sequence[tuple[int, int]], *, remove: bool = True
) -> tuple[nn.Module, TunnelEvent]:
    """Merge unit ``drop`` into unit ``keep`` (average inbound, sum outbound) for each ``(keep, drop)``.

    Args:
        model: The network (not modified).
        site: Producer name, ``(producer, consumer)`` or a :class:`TunnelSite`.
        pairs: Disjoint ``(keep, drop)`` pairs.
        remove: Delete the dropped units (the architecture shrinks); if ``False`` they stay as copies of
            the merged unit with zero outbound weights (inconsequential), ready to be reopened.

    Returns:
        ``(new_model, event)`` with ``kind="close"``; indices in the event refer to ``model``.

    Raises:
        IndexError, ValueError: On out-of-range or repeated units.
    """
    new = copy.deepcopy(model)
    s = resolve_site(new, site)
    pairs = _check_pairs(pairs, s.n_units)
    _close_site(new, s, pairs, remove)
    changes = tuple(UnitChange(s.producer, s.consumer, k, d) for k, d in pairs)
    return new, TunnelEvent(EventKind.CLOSE.value, changes)


def reorganize_units(
    model: nn.Module, site: Any, merges: Sequence[tuple[int, int]], units: Sequence[int], lambdas: Any
) -> tuple[nn.Module, TunnelEvent]:
    """Weight reorganization with a given split: close each ``u2`` onto ``u1``, reopen ``units`` into the slots.

    Args:
        model: The network (not modified).
        site: Producer name, ``(producer, consumer)`` or a :class:`TunnelSite`.
        merges: Disjoint ``(u1, u2)`` pairs; ``u2`` is merged into ``u1`` and its slot is reused.
        units: One unit per merge to clone into the slot of that merge's ``u2`` (a ``u1`` is allowed,
            a ``u2`` is not).
        lambdas: Split kept by each unit, shape ``(n, L)`` or ``(L,)``.

    Returns:
        ``(new_model, event)`` with ``kind="reorganize"``; the architecture is unchanged.

    Raises:
        IndexError, ValueError: On bad indices, counts or shapes.
    """
    new = copy.deepcopy(model)
    s = resolve_site(new, site)
    merges = _check_pairs(merges, s.n_units)
    units = _check_units(units, s.n_units, "units")
    slots = [b for _, b in merges]
    if len(units) != len(merges) or set(units) & set(slots):
        raise ValueError(
            f"need one unit to clone per merge and none of the merged-away slots {slots}; got units {units}"
        )
    lam = _lambda_matrix(lambdas, len(units), s, *_dtype_device(new, s))
    _close_site(new, s, merges, remove=False)
    _clone_into(new, s, units, slots, lam)
    changes = tuple(
        UnitChange(s.producer, s.consumer, u, b, lv, merged_into=a)
        for u, (a, b), lv in zip(units, merges, _applied(lam))
    )
    return new, TunnelEvent(EventKind.REORGANIZE.value, changes)


def close_tunnels(model: nn.Module, event: TunnelEvent | Mapping[str, Any]) -> tuple[nn.Module, TunnelEvent]:
    """Close every tunnel an opening created: merge each clone into its unit and delete it.

    Sites are closed in the reverse order of opening, so chained openings (a unit and a unit of the
    next layer) undo cleanly. Closing right after opening restores the original parameters bitwise
    whenever every lambda lies in ``[-1, 2]`` (always for ``t <= 1``).

    Args:
        model: The opened (and possibly trained) network; not modified.
        event: The :class:`TunnelEvent` (or its dict) returned by the opening.

    Returns:
        ``(new_model, close_event)``.

    Raises:
        ValueError: If the event is not an opening or the model does not have the clones it names.
    """
    if not isinstance(event, TunnelEvent):
        event = TunnelEvent.from_dict(event)
    if event.kind != EventKind.OPEN.value:
        raise ValueError(f"close_tunnels undoes an 'open' event, got a {event.kind!r} event")
    new = copy.deepcopy(model)
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for c in event.changes:
        groups.setdefault((c.producer, c.consumer), []).append((c.unit, c.clone))
    changes = []
    for key in reversed(list(groups)):
        s = resolve_site(new, key)
        pairs = groups[key]
        if max(d for _, d in pairs) >= s.n_units:
            raise ValueError(f"{key[0]!r} has {s.n_units} units, fewer than the clones {pairs} of the event")
        _close_site(new, s, _check_pairs(pairs, s.n_units), remove=True)
        changes += [UnitChange(s.producer, s.consumer, k, d) for k, d in pairs]
    return new, TunnelEvent(EventKind.CLOSE.value, tuple(changes))


# ============================================================================ choosing units and lambdas
def _get_stats(
    model: nn.Module, sites: list[TunnelSite], stats: SplitStats | None, data: Any, loss_fn: Any, **kw: Any
) -> SplitStats:
    from tunnels.split import split_stats

    if stats is None:
        if data is None or loss_fn is None:
            raise ValueError(
                "choosing units by rho or lambda by mode='proposed' needs the matrices A: pass "
                "stats=split_stats(model, data, loss_fn) (or an accumulator's .stats()), or data= and loss_fn="
            )
        stats = split_stats(model, data, loss_fn, sites, **kw)
    for s in sites:
        if s.producer not in stats.A:
            raise ValueError(f"stats have no matrix A for {s.producer!r}; they cover {list(stats.A)}")
        got = tuple(stats.A[s.producer].shape)
        if got != (s.n_units, s.n_in, s.n_out):
            raise ValueError(
                f"stats for {s.producer!r} have A of shape {got} but the model needs {(s.n_units, s.n_in, s.n_out)}; "
                "they were computed on another architecture: recompute them (or reset the accumulator)"
            )
    return stats


def _plan(
    model: nn.Module, units: UnitsSpec, stats: SplitStats | None, need_a: bool, kw: dict[str, Any]
) -> tuple[dict[str, tuple[TunnelSite, list[int]]], SplitStats | None]:
    """Resolve the units spec into ``{producer: (site, units)}`` in module order, computing stats if needed."""
    if isinstance(units, int):
        _check_count(units, "units")
        sites = list(stats.sites) if stats is not None else list(find_sites(model))
        sites = [resolve_site(model, s) for s in sites]
        if not sites:
            raise UnsupportedSiteError(f"the model has no supported site ({SUPPORTED_PAIRS})")
        stats = _get_stats(model, sites, stats, **kw)
        ranked = stats.ranking()
        if units > len(ranked):
            raise ValueError(f"asked for {units} units but the sites have {len(ranked)}")
        chosen: dict[str, list[int]] = {}
        for p, u, _ in ranked[:units]:
            chosen.setdefault(p, []).append(u)
        by_name = {s.producer: s for s in sites}
        plan = {p: (by_name[p], us) for p, us in chosen.items()}
    else:
        plan, need_rank = {}, []
        for key, spec in units.items():
            s = resolve_site(model, key)
            plan[s.producer] = (s, spec)
            if isinstance(spec, int):
                _check_count(spec, f"units[{key!r}]")
                need_rank.append(s)
        if need_rank or need_a:
            stats = _get_stats(model, [s for s, _ in plan.values()], stats, **kw)
        for p, (s, spec) in plan.items():
            if isinstance(spec, int):
                order = torch.argsort(stats.rho(p), descending=True, stable=True)  # type: ignore[union-attr]
                spec = [int(u) for u in order[:spec]]
            plan[p] = (s, _check_units(spec, s.n_units, f"units of {p!r}"))
    order = module_order(model)
    return dict(sorted(plan.items(), key=lambda kv: order[kv[0]])), stats


def _lambda_source(mode: LambdaMode | str, seed: int | None) -> tuple[LambdaMode, int | None, torch.Generator | None]:
    """The parsed mode, the seed (drawn from torch's generator for random directions if ``None``) and its generator."""
    from tunnels.split import LambdaMode

    mode_e = parse_option(LambdaMode, mode)
    if seed is None and mode_e is LambdaMode.RANDOM:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    return mode_e, seed, torch.Generator().manual_seed(seed) if seed is not None else None


def _site_lambdas(
    model: nn.Module,
    site: TunnelSite,
    n: int,
    mode: LambdaMode,
    t: float,
    star: Tensor | None,
    gen: torch.Generator | None,
) -> Tensor:
    """The ``(n, L)`` splits of ``n`` units of a site (row ``i`` from ``star[i]`` if given), in the site's dtype."""
    from tunnels.split import make_lambdas

    lam = torch.stack([make_lambdas(mode, t, site.n_out, None if star is None else star[i], gen) for i in range(n)])
    dtype, device = _dtype_device(model, site)
    return lam.to(dtype=dtype, device=device)


def _event_info(stats: SplitStats | None) -> dict[str, Any]:
    return {} if stats is None else {"stats": stats.method, "n_examples": stats.n_examples}


@shows_keywords(SplitSource, SOURCE_DEFAULTS)
def open_tunnels(
    model: nn.Module,
    units: UnitsSpec = 1,
    *,
    t: float = 1.0,
    mode: LambdaMode | str = "proposed",
    seed: int | None = None,
    **source: Unpack[SplitSource],
) -> tuple[nn.Module, TunnelEvent]:
    """Open tunnels: clone units with ``lambda_t = 1/2 + t * lambda_star`` (or a control split).

    Units of several layers may be opened at once. Layers are processed in module order; when a
    layer's producer reads an earlier opened layer, its A gains the rows of the new inputs (copies of
    their originals' rows, see :func:`tunnels.split.augment_rows`), so the split stays exact for the
    grown network. Ranking by rho uses the A of the given network.

    Args:
        model: The network (not modified).
        units: An int ``n`` (the ``n`` units with the largest rho over all sites of ``stats``, or of
            the model), or a mapping from a producer name (or ``(producer, consumer)``) to an int
            (that many top-rho units of that layer) or to explicit unit indices.
        t: Distance of lambda from ``1/2``; the squared gradient norm gained is ``2 t^2 rho`` per unit.
        mode: ``"proposed"`` (principal eigenvector of ``A^T A``), ``"random"`` (a random unit
            direction, the paper's control), ``"constant"`` (``1/sqrt(L)`` in every entry) or ``"half"``
            (``lambda = 1/2``, never breaks symmetry).
        seed: Seed of the random directions (drawn from torch's generator and recorded if ``None``).
        **source: Where A comes from (:class:`tunnels.split.SplitSource`): ``stats``, precomputed
            (:func:`tunnels.split.split_stats` or ``SplitAccumulator.stats()``), or ``data`` and ``loss_fn``
            (the batch mean), with :func:`~tunnels.split.split_stats`'s ``max_batches``, ``train``,
            ``batch_size``, ``max_elements`` and ``progress``.

    Returns:
        ``(new_model, event)``; ``event.to_dict()`` is JSON-compatible, and ``close_tunnels(new, event)``
        undoes the opening.

    Raises:
        ValueError: On an unknown mode (listing the valid ones), missing data for A, or stats that do
            not match the model.
        UnsupportedSiteError: On an unsupported site.
    """
    from tunnels.split import LambdaMode, augment_rows, principal_split

    stats, data, loss_fn, stats_kw = split_source("open_tunnels", source)
    mode_e, seed, gen = _lambda_source(mode, seed)
    kw = {"data": data, "loss_fn": loss_fn, **stats_kw}
    plan, stats = _plan(model, units, stats, mode_e is LambdaMode.PROPOSED, kw)
    new = copy.deepcopy(model)
    opened: dict[str, tuple[int, list[int]]] = {}  # consumer name -> (units before, units cloned)
    changes: list[UnitChange] = []
    for p, (site, us) in plan.items():
        s = resolve_site(new, site)
        rho = star = None
        if stats is not None and p in stats.A:
            a = stats.A[p][us]
            if p in opened:
                a = augment_rows(a, site.n_weight, *opened[p])
            rho, star = principal_split(a)
        lam = _site_lambdas(new, s, len(us), mode_e, t, star, gen)
        clones = _open_site(new, s, us, lam)
        opened[s.consumer] = (s.n_units, us)
        changes += [
            UnitChange(s.producer, s.consumer, u, c, lv, None if rho is None else float(rho[i]))
            for i, (u, c, lv) in enumerate(zip(us, clones, _applied(lam)))
        ]
    ev = TunnelEvent(EventKind.OPEN.value, tuple(changes), mode_e.value, float(t), seed, **_event_info(stats))
    return new, ev


@shows_keywords(SplitSource, SOURCE_DEFAULTS)
def reorganize(
    model: nn.Module,
    site: Any,
    merges: int | Sequence[tuple[int, int]] = 1,
    units: Sequence[int] | None = None,
    *,
    t: float = 1.0,
    mode: LambdaMode | str = "proposed",
    seed: int | None = None,
    **source: Unpack[SplitSource],
) -> tuple[nn.Module, TunnelEvent]:
    """Practical weight reorganization (Section 3.2): merge pairs of units, reopen chosen units in their slots.

    With ``data``, A is computed on the merged network, where the freed slots have zero outbound
    weights (the theory's setting); with ``stats`` only, the given A (of the network before merging) is
    used, an approximation. The paper does not say how ``u1, u2`` are picked: an int ``merges`` picks
    that many disjoint pairs with the closest inbound weights (merging them changes the function least;
    for redundant pairs not at all), keeping the lower index.

    Args:
        model: The network (not modified).
        site: Producer name, ``(producer, consumer)`` or a :class:`TunnelSite`.
        merges: Number of pairs to merge, or explicit ``(u1, u2)`` pairs.
        units: Units to clone into the freed slots; default the top-rho units that are not freed slots.
        t: Distance of lambda from ``1/2``.
        mode: As in :func:`open_tunnels`.
        seed: Seed of random directions.
        **source: Where A comes from, as in :func:`open_tunnels`: ``stats`` for this site, or ``data`` and
            ``loss_fn`` to compute A on the merged network (with the same :func:`~tunnels.split.split_stats`
            options).

    Returns:
        ``(new_model, event)`` with ``kind="reorganize"``.

    Raises:
        ValueError: On bad pairs or units, an unknown mode, or missing A.
    """
    from tunnels.split import LambdaMode, principal_split, split_stats

    stats, data, loss_fn, stats_kw = split_source("reorganize", source)
    mode_e, seed, gen = _lambda_source(mode, seed)
    s = resolve_site(model, site)
    if isinstance(merges, int):
        _check_count(merges, "merges")
        merges = _closest_pairs(model, s, merges)
    merges = _check_pairs(merges, s.n_units)
    slots = [b for _, b in merges]
    merged = copy.deepcopy(model)
    _close_site(merged, s, merges, remove=False)
    need_a = mode_e is LambdaMode.PROPOSED or units is None
    if need_a and data is not None and loss_fn is not None:
        stats = split_stats(merged, data, loss_fn, [s], **stats_kw)
    elif need_a:
        stats = _get_stats(model, [s], stats, data, loss_fn)
    rho_all = stats.rho(s.producer) if stats is not None else None
    if units is None:
        assert rho_all is not None
        free = [u for u in torch.argsort(rho_all, descending=True, stable=True).tolist() if u not in slots]
        units = free[: len(merges)]
    units = _check_units(units, s.n_units, "units")
    if len(units) != len(merges) or set(units) & set(slots):
        raise ValueError(f"need one unit to clone per merge and none of the freed slots {slots}; got units {units}")
    rho = star = None
    if stats is not None:
        rho, star = principal_split(stats.A[s.producer][units])
    lam = _site_lambdas(merged, s, len(units), mode_e, t, star, gen)
    _clone_into(merged, s, units, slots, lam)
    changes = tuple(
        UnitChange(s.producer, s.consumer, u, b, lv, None if rho is None else float(rho[i]), merged_into=a)
        for i, (u, (a, b), lv) in enumerate(zip(units, merges, _applied(lam)))
    )
    ev = TunnelEvent(EventKind.REORGANIZE.value, changes, mode_e.value, float(t), seed, **_event_info(stats))
    return merged, ev


def _closest_pairs(model: nn.Module, site: TunnelSite, n: int) -> list[tuple[int, int]]:
    """Greedy disjoint pairs of units with the closest inbound vectors (weights, bias, BatchNorm channel)."""
    prod = model.get_submodule(site.producer)
    parts = [prod.weight.detach().reshape(site.n_units, -1)]
    mods = [prod] + [model.get_submodule(nm) for nm in site.norms]
    for m in mods:
        for attr in ("bias",) if m is prod else ("weight", "bias"):
            if getattr(m, attr) is not None:
                parts.append(getattr(m, attr).detach().reshape(-1, 1))
    x = torch.cat(parts, dim=1).double()
    if 2 * n > site.n_units:
        raise ValueError(f"cannot merge {n} disjoint pairs among {site.n_units} units")
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    pairs = []
    for _ in range(n):
        i, j = divmod(int(torch.argmin(d)), site.n_units)
        pairs.append((min(i, j), max(i, j)))
        d[[i, j], :] = float("inf")
        d[:, [i, j]] = float("inf")
    return pairs
