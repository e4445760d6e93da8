r"""The matrix A of a tunnel site and the gradient-maximizing outbound split lambda_star.

Implements Sections 2.3-2.4 and Appendices A-B of "Escaping Flat Areas via Function-Preserving
Structural Network Modifications" ("Tunnels"). The paper's equations are garbled in the extracted
text; A is derived here from first principles for every supported pair of :mod:`tunnels.sites`.

Derivation
----------
Producer P with ``U`` units, consumer R with ``V`` units, data ``n = 1..N``, loss
``E = (1/N) sum_n l_n``. Unit ``u`` has inbound parameters ``theta_u`` in ``R^K``: its weight row
(Linear: ``W_P[u, :]``, ``K_w = in_features``; Conv2d: filter ``W_P[u]`` of shape ``(C, kh, kw)``,
``K_w = C*kh*kw``, flattened C-major), its bias, then the weight and bias of channel ``u`` of each
affine BatchNorm between P and R. The producer is linear in ``theta_u``:

    h[n, u, m] = sum_k Pin[n, k, m] theta_u[k]       Pin: inputs unfolded into patches, plus a row of 1s

(``m`` runs over output positions; ``M = 1`` for Linear). The modules between P and R act on each
channel separately, ``z[:, u] = g(h[:, u], BN channel u)`` (activation, BatchNorm, pooling; a Flatten
is a reshape), and R is linear in its input. Write R's output as a sum over the *outbound weights*
of ``u``, indexed by ``(v, q)``:

    y[n, v, r] = b_v + sum_u sum_q W_R[v, u, q] z[n, u, pi(r, q)]

* Linear -> Linear: ``Q = 1``; the outbound weights of ``u`` are the column ``W_R[:, u]``, ``L = V``.
* Conv2d -> Conv2d: ``q = (i', j')`` is a kernel offset, ``pi(r, q) = stride * r + dilation * q -
  padding`` (zero outside the image); outbound weights ``W_R[:, u, :, :]``, ``L = V * kh' * kw'``.
* Conv2d -> [pool] -> Flatten -> Linear: flatten is channel-major, so ``u`` owns the inputs
  ``u*M .. u*M + M - 1`` of R; ``q = m`` in ``[0, M)``, ``r`` is trivial; outbound weights
  ``W_R[:, u*M : (u+1)*M]``, ``L = V * M``.

With ``delta[n, v, r] = dE/dy[n, v, r]`` the chain rule gives ``dE/dtheta_u = A 1`` with
``A in R^{K x L}`` collecting one column per outbound weight (the paper's ``a_{pi}``, eqs. 11, 19):

    A[k, (v, q)] = W_R[v, u, q] * sum_n sum_r delta[n, v, r] * dz[n, u, pi(r, q)] / dtheta_u[k]    (*)

Opening clones ``u`` into ``u'`` (``theta_u' = theta_u``) and scales the outbound weights to
``lambda * W_R[:, u]`` and ``(1 - lambda) * W_R[:, u]``. Since ``z[:, u'] = z[:, u]`` the output is
unchanged, so ``delta`` and ``z`` are unchanged, and (*) with ``W_R`` replaced by the new weights
gives ``dE/dtheta_u = A lambda`` and ``dE/dtheta_u' = A (1 - lambda)`` (eqs. 4, 12, 20). The
gradient of every outbound weight of ``u`` and ``u'`` equals the old gradient of that weight (it
multiplies the same ``z``), and all other gradients are unchanged. Hence, with
``lambda_t = 1/2 + t lambda_star``, ``lambda_star`` the unit principal right singular vector of A and
``rho = sigma_max(A)^2`` the largest eigenvalue of ``A^T A``, the cross terms cancel:

    ||A lambda_t||^2 + ||A (1 - lambda_t)||^2 = ||A 1||^2 / 2 + 2 t^2 rho
    ||grad E'||^2 = ||grad E||^2 - ||A 1||^2 / 2 + 2 t^2 rho + ||dE/dW_R[:, u]||^2

for any ``lambda_star`` sign and any network. At a critical point ``A 1 = 0`` and every gradient
vanishes, so ``||grad E'||^2 = 2 t^2 rho`` per opened unit (units of one layer add up). The paper's
text says ``H(lambda_t) = (t rho)^2``; the derivation gives ``2 t^2 rho`` with rho the eigenvalue of
``A^T A`` (``rho`` as a singular value would need ``2 (t rho)^2``); this module uses the derived value.
The random control uses ``lambda = 1/2 + t r`` with ``r`` uniform on the unit sphere (same norm).

Computing (*) exactly. ``dz / dtheta_u[k]`` is a forward-mode derivative: for producer rows its
tangent at ``h`` is ``Pin[:, k]``, the same for every unit, and ``g`` is channel-wise, so one
``torch.func.jvp`` per row ``k`` (vmapped over chunks of rows) gives ``T[k, n, u, :]`` for all units
at once; BatchNorm rows use one-hot tangents on its weight / bias. Then, per pair:

* Linear consumer (with or without Flatten): ``A[u, k, (v, m)] = W_R[v, u, m] sum_n delta[n, v] T[k, n, u, m]``.
* Conv2d consumer: ``sum_n sum_r delta[n, v, r] T[k, n, u, pi(r, q)]`` is the weight gradient of R with
  input ``T[k]`` and output gradient ``delta`` (``torch.nn.grad.conv2d_weight``), times ``W_R[v, u, q]``.

``delta`` is taken with autograd at R's output for the batch-mean loss; a pass over batches weights each
batch's A by its share of examples (of class weight), which gives (*) for the mean loss over the pass. In train
mode a BatchNorm couples the examples of a batch; (*) stays exact for the batch loss because ``T`` is
the derivative of the whole batch's ``z``. Three estimates (paper, Appendix B): a full pass
(``split_stats``), a partial pass (``max_batches=k``), and an exponential moving average over recent
training steps (:class:`SplitAccumulator`, bias-corrected like Adam's moments).
"""

from __future__ import annotations

import copy
import enum
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape._loss import weighted_count
from landscape._options import parse_option
from landscape.functional import hook_attributes
from landscape.params import preserved_mode
from landscape.validation import check_model, is_tensor_pair, iter_validated, validate_batches
from tunnels.sites import PairKind, TunnelSite, find_sites, module_order, resolve_site

__all__ = [
    "LambdaMode",
    "StatsMethod",
    "SplitStats",
    "SplitSource",
    "split_matrices",
    "split_stats",
    "SplitAccumulator",
    "principal_split",
    "make_lambdas",
    "augment_rows",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


class LambdaMode(str, enum.Enum):
    """How the outbound split ``lambda`` is chosen (all but ``half`` lie at distance ``t`` from ``1/2``)."""

    PROPOSED = "proposed"  # 1/2 + t * principal eigenvector of A^T A (the paper's method)
    RANDOM = "random"  # 1/2 + t * random unit vector (the paper's control)
    CONSTANT = "constant"  # 1/2 + t / sqrt(L) in every entry (Fig. 3's constant vector)
    HALF = "half"  # 1/2: never breaks the symmetry of clone and original (Fig. 3)


class StatsMethod(str, enum.Enum):
    """How A was estimated (paper, Appendix B)."""

    FULL = "full"
    PARTIAL = "partial"
    EMA = "ema"


@dataclass(frozen=True)
class SplitStats:
    """The matrices A of some sites, estimated from data.

    Attributes:
        sites: The sites, in module order.
        A: ``{producer: tensor (U, K, L)}`` in float64; ``A[producer][u]`` is unit ``u``'s matrix, rows
            in :class:`~tunnels.sites.TunnelSite` ``n_in`` order, columns in consumer-weight order.
        method: ``"full"``, ``"partial"`` or ``"ema"``.
        n_examples: Examples behind the estimate.
        n_batches: Batches behind the estimate.
    """

    sites: tuple[TunnelSite, ...]
    A: dict[str, Tensor]
    method: str
    n_examples: int
    n_batches: int
    _cache: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False, compare=False)

    def principal(self, producer: str) -> tuple[Tensor, Tensor]:
        """``(rho (U,), lambda_star (U, L))`` of every unit of ``producer``, see :func:`principal_split`."""
        if producer not in self.A:
            raise KeyError(f"no site {producer!r} in these stats; sites are {list(self.A)}")
        if producer not in self._cache:
            self._cache[producer] = principal_split(self.A[producer])
        return self._cache[producer]

    def rho(self, producer: str) -> Tensor:
        """Largest eigenvalue of ``A^T A`` per unit, shape ``(U,)``."""
        return self.principal(producer)[0]

    def ranking(self) -> list[tuple[str, int, float]]:
        """All ``(producer, unit, rho)``, largest rho first (ties: module order, then unit index)."""
        rows = [(p, u, float(r)) for p in self.A for u, r in enumerate(self.rho(p).tolist())]
        return sorted(rows, key=lambda x: -x[2])


def principal_split(A: Tensor) -> tuple[Tensor, Tensor]:
    """Largest eigenvalue ``rho`` of ``A^T A`` and its unit eigenvector ``lambda_star``, by SVD.

    The sign is fixed so that the entry of largest magnitude is positive (``H(lambda_t)`` does not
    depend on it).

    Args:
        A: Shape ``(..., K, L)``.

    Returns:
        ``rho`` of shape ``(...)`` and ``lambda_star`` of shape ``(..., L)``, float64.
    """
    _, s, vh = torch.linalg.svd(A.double(), full_matrices=False)
    star = vh[..., 0, :]
    pick = star.abs().argmax(dim=-1, keepdim=True)
    star = torch.where(star.gather(-1, pick) < 0, -star, star)
    return s[..., 0] ** 2, star


def make_lambdas(
    mode: LambdaMode | str,
    t: float,
    n_out: int,
    lambda_star: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The outbound split kept by the original unit, ``lambda = 1/2 + t * direction``.

    Args:
        mode: A :class:`LambdaMode` (or its string).
        t: Distance from ``1/2``.
        n_out: ``L``, the number of outbound weights.
        lambda_star: Unit direction of shape ``(L,)``, required for ``"proposed"``.
        generator: Random generator for ``"random"``.

    Returns:
        Shape ``(L,)``, float64.

    Raises:
        ValueError: On an unknown mode or a missing / misshaped ``lambda_star``.
    """
    mode = parse_option(LambdaMode, mode)
    half = torch.full((n_out,), 0.5, dtype=torch.float64)
    if mode is LambdaMode.HALF:
        return half
    if mode is LambdaMode.CONSTANT:
        return half + t / math.sqrt(n_out)
    if mode is LambdaMode.RANDOM:
        r = torch.randn(n_out, generator=generator, dtype=torch.float64)
        return half + t * r / r.norm()
    if lambda_star is None or tuple(lambda_star.shape) != (n_out,):
        raise ValueError(f"mode 'proposed' needs lambda_star of shape ({n_out},), from principal_split(A)")
    return half + t * lambda_star.double().cpu()


def augment_rows(A: Tensor, n_weight: int, n_inputs: int, cloned: Sequence[int]) -> Tensor:
    """A of units whose producer reads a layer in which ``cloned`` units were just opened.

    The producer's inputs grew by copies of ``cloned`` (appended after the ``n_inputs`` originals);
    a clone's signal equals its original's, so by (*) its rows of A equal the original's rows.

    Args:
        A: Shape ``(n, K, L)`` for the producer before the upstream opening; the first ``n_weight`` rows
            are its weight row laid out as ``(n_inputs, n_weight / n_inputs)``, the rest bias / BatchNorm.
        n_weight: ``K_w``, weight entries per unit of the producer before the upstream opening.
        n_inputs: Units of the upstream layer before opening.
        cloned: Upstream units cloned, in the order their clones were appended.

    Returns:
        Shape ``(n, K + len(cloned) * n_weight / n_inputs, L)``.

    Raises:
        ValueError: If ``n_weight`` is not a multiple of ``n_inputs``.
    """
    if n_weight % n_inputs:
        raise ValueError(f"{n_weight} weights per unit cannot be laid out over {n_inputs} inputs")
    idx = torch.as_tensor(list(cloned), dtype=torch.long)
    n, _, l_ = A.shape
    w = A[:, :n_weight].reshape(n, n_inputs, n_weight // n_inputs, l_)
    w = torch.cat([w, w[:, idx]], dim=1).reshape(n, -1, l_)
    return torch.cat([w, A[:, n_weight:]], dim=1)


# ============================================================================ one batch
def _segment(model: nn.Module, site: TunnelSite, train: bool) -> tuple[Callable[..., Tensor], list[Tensor]]:
    """``g(h, *bn_params) -> z`` for the modules between producer and consumer, channels kept apart."""
    steps: list[Any] = []
    bn_params: list[Tensor] = []
    for name in site.between:
        m = model.get_submodule(name)
        if isinstance(m, nn.Flatten | nn.Identity | nn.Dropout):
            continue  # Flatten is applied as a reshape later; Dropout acts as identity (eval-mode theory)
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            j = len(bn_params) if m.affine else None
            if m.affine:
                bn_params += [m.weight.detach(), m.bias.detach()]
            steps.append((m, j))
        else:
            if getattr(m, "inplace", False):  # in-place ops would write into the captured activations
                m = copy.copy(m)
                m.inplace = False
            steps.append((m, -1))

    def g(h: Tensor, *params: Tensor) -> Tensor:
        z = h
        for m, j in steps:
            if j == -1:
                z = m(z)
                continue
            batch = train or m.running_mean is None
            w, b = (params[j], params[j + 1]) if j is not None else (None, None)
            z = F.batch_norm(
                z, None if batch else m.running_mean, None if batch else m.running_var, w, b, training=batch, eps=m.eps
            )
        return z

    return g, bn_params


def _patches(prod: nn.Module, x: Tensor, h: Tensor) -> Tensor:
    """Producer inputs as ``Pin`` of shape ``(N, K_p, *spatial of h)`` with a trailing row of 1s for a bias."""
    if isinstance(prod, nn.Conv2d):
        mode = "constant" if prod.padding_mode == "zeros" else prod.padding_mode
        xp = F.pad(x, prod._reversed_padding_repeated_twice, mode=mode)
        cols = F.unfold(xp, prod.kernel_size, dilation=prod.dilation, stride=prod.stride)
        cols = cols.reshape(x.shape[0], -1, *h.shape[2:])
    else:
        if x.dim() != 2:
            raise ValueError(f"Linear producer inputs must be (batch, features), got shape {tuple(x.shape)}")
        cols = x
    if prod.bias is not None:
        cols = torch.cat([cols, torch.ones_like(cols[:, :1])], dim=1)
    return cols


def _contract(site: TunnelSite, cons: nn.Module, T: Tensor, delta: Tensor) -> Tensor:
    """Per-pair closed form of (*): ``T (k, N, U, *spatial)`` and ``delta`` -> A rows ``(U, k, L)``."""
    kc, n, u = T.shape[:3]
    w3 = cons.weight.detach().reshape(site.n_consumer, site.n_units, site.spatial).permute(1, 0, 2)  # (U, V, Q)
    if site.kind is PairKind.CONV_CONV:
        inp = T.transpose(0, 1).reshape(n, kc * u, *T.shape[3:])
        mode = "constant" if cons.padding_mode == "zeros" else cons.padding_mode
        inp = F.pad(inp, cons._reversed_padding_repeated_twice, mode=mode)
        gw = torch.nn.grad.conv2d_weight(
            inp, (site.n_consumer, kc * u, *cons.kernel_size), delta, stride=cons.stride, dilation=cons.dilation
        )
        s = gw.reshape(site.n_consumer, kc, u, site.spatial).permute(2, 1, 0, 3)  # (U, k, V, Q)
    else:
        s = torch.einsum("knum,nv->ukvm", T.reshape(kc, n, u, site.spatial), delta)
    return (s * w3[:, None]).reshape(u, kc, site.n_out)


def split_matrices(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: LossFn,
    sites: Sequence[Any] | None = None,
    *,
    train: bool = False,
    max_elements: int = 2**24,
) -> dict[str, Tensor]:
    """The matrices A of one batch, for the batch-mean loss (one forward, one backward, jvps).

    Args:
        model: The network (not modified: evaluated with ``functional_call``, buffers copied in train mode).
        batch: ``(X (B, ...), y (B, ...))``.
        loss_fn: ``loss_fn(output, target)`` returning the batch mean.
        sites: Producer names, ``(producer, consumer)`` pairs or sites; default every supported site.
        train: Evaluate in train mode (BatchNorm batch statistics) instead of eval mode.
        max_elements: Bound on the elements of the tangents computed at once (sets the chunk of rows).

    Returns:
        ``{producer: A (U, K, L)}`` in float64.

    Raises:
        ValueError: If the modules between a producer and its consumer do not reproduce the consumer's
            input (code in ``forward`` that is not channel-wise), or on Dropout in train mode.
    """
    resolved = [resolve_site(model, s) for s in (find_sites(model) if sites is None else sites)]
    x, y = batch
    caps: dict[str, Any] = {}
    outs: dict[str, Tensor] = {}

    def prod_hook(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
            caps[name] = (args[0].detach().clone(), out.detach().clone())  # a later in-place op must not alter them

        return hook

    def cons_hook(name: str) -> Callable[..., Tensor]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
            caps["in:" + name] = args[0].detach().clone()
            if not out.requires_grad:
                out.requires_grad_()
            outs[name] = out
            return out.clone()  # a later in-place op must not overwrite the tensor we differentiate at

        return hook

    handles = []
    try:
        for s in resolved:
            if train and any(isinstance(model.get_submodule(n), nn.Dropout) for n in s.between):
                raise ValueError(f"Dropout between {s.producer!r} and {s.consumer!r}: compute A with train=False")
            handles.append(model.get_submodule(s.producer).register_forward_hook(prod_hook(s.producer)))
            handles.append(model.get_submodule(s.consumer).register_forward_hook(cons_hook(s.consumer)))
        params = {k: v.detach() for k, v in model.named_parameters()}
        bufs = {k: (v.detach().clone() if train else v.detach()) for k, v in model.named_buffers()}
        with torch.enable_grad(), preserved_mode(model, train), hook_attributes(model):  # hooks' attributes put back
            loss = loss_fn(torch.func.functional_call(model, {**params, **bufs}, (x,)), y)
            grads = torch.autograd.grad(loss, [outs[s.consumer] for s in resolved], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    result = {}
    with torch.no_grad():
        for s, delta in zip(resolved, grads):
            xin, h = caps[s.producer]
            delta = torch.zeros_like(outs[s.consumer]) if delta is None else delta.detach()
            result[s.producer] = _site_matrix(model, s, xin, h, caps["in:" + s.consumer], delta, train, max_elements)
    return result


def _site_matrix(
    model: nn.Module, s: TunnelSite, x: Tensor, h: Tensor, zin: Tensor, delta: Tensor, train: bool, budget: int
) -> Tensor:
    prod, cons = model.get_submodule(s.producer), model.get_submodule(s.consumer)
    g, bn = _segment(model, s, train)
    z = g(h, *bn)
    n = h.shape[0]
    tol = torch.finfo(h.dtype).eps ** 0.5
    if z.numel() != zin.numel() or not torch.allclose(
        z.reshape(n, -1), zin.reshape(n, -1), rtol=tol, atol=tol * float(zin.abs().max().clamp_min(1))
    ):
        raise ValueError(
            f"the modules between {s.producer!r} and {s.consumer!r} ({list(s.between)}) do not reproduce the "
            "consumer's input; the forward code between them must act on each channel separately (a flatten)"
        )
    pin = _patches(prod, x, h)  # (N, Kp, *sp)
    kp, per_row = pin.shape[1], h.numel()
    chunk = max(1, budget // max(per_row, 1))
    zeros = [torch.zeros_like(p) for p in bn]
    rows = []
    for k0 in range(0, kp, chunk):
        tang = pin[:, k0 : k0 + chunk].transpose(0, 1).unsqueeze(2).expand(-1, -1, s.n_units, *h.shape[2:])

        def jvp_h(th: Tensor) -> Tensor:
            return torch.func.jvp(g, (h, *bn), (th, *zeros))[1]

        T = torch.func.vmap(jvp_h)(tang)
        rows.append(_contract(s, cons, T, delta))
    for j in range(len(bn)):
        tz = list(zeros)
        tz[j] = torch.ones_like(bn[j])
        T = torch.func.jvp(g, (h, *bn), (torch.zeros_like(h), *tz))[1]
        rows.append(_contract(s, cons, T.unsqueeze(0), delta))
    return torch.cat(rows, dim=1).double()


# ============================================================================ passes and accumulators
class SplitSource(TypedDict, total=False):
    """Where a surgery gets the matrices A: ``stats``, or ``data`` and ``loss_fn`` with :func:`split_stats`'s options.

    The keywords of :func:`tunnels.surgery.open_tunnels` and :func:`tunnels.surgery.reorganize`, which show in
    their signatures (defaults: :data:`SOURCE_DEFAULTS`).

    Attributes:
        stats: Precomputed A (:func:`split_stats` or ``SplitAccumulator.stats()``).
        data: Data to compute A when ``stats`` is not given: a tensor pair or an iterable of batches.
        loss_fn: ``loss_fn(output, target)`` returning the batch mean, with ``data``.
        max_batches: Stop after this many batches (a partial pass).
        train: Evaluate in train mode (BatchNorm batch statistics).
        batch_size: Batch size for a tensor pair.
        max_elements: Memory bound, see :func:`split_matrices`.
        progress: Show a progress bar over batches.
    """

    stats: SplitStats | None
    data: Any
    loss_fn: LossFn | None
    max_batches: int | None
    train: bool
    batch_size: int | None
    max_elements: int
    progress: bool


def split_source(function: str, source: SplitSource) -> tuple[SplitStats | None, Any, LossFn | None, dict[str, Any]]:
    """``(stats, data, loss_fn, split_stats keywords)`` of a surgery's :class:`SplitSource` keywords.

    Raises:
        TypeError: ``<function>() got an unexpected keyword argument '<name>'``, as Python would.
    """
    from landscape._options import check_keywords

    check_keywords(function, source, SplitSource)
    rest: dict[str, Any] = dict(source)
    return rest.pop("stats", None), rest.pop("data", None), rest.pop("loss_fn", None), rest


def _resolve_sites(model: nn.Module, sites: Sequence[Any] | None) -> list[TunnelSite]:
    """The sites (default every supported one) in module order, as :class:`SplitStats` holds them."""
    order = module_order(model)
    resolved = [resolve_site(model, s) for s in (find_sites(model) if sites is None else sites)]
    return sorted(resolved, key=lambda s: order[s.producer])


def split_stats(
    model: nn.Module,
    data: Any,
    loss_fn: LossFn,
    sites: Sequence[Any] | None = None,
    *,
    max_batches: int | None = None,
    train: bool = False,
    batch_size: int | None = 256,
    max_elements: int = 2**24,
    progress: bool = False,
) -> SplitStats:
    """A over a full pass of the data (the paper's theory) or its first ``max_batches`` batches.

    Args:
        model: The network (not modified).
        data: A tensor pair ``(X, y)`` (split into batches of ``batch_size``) or an iterable of batches.
        loss_fn: ``loss_fn(output, target)`` returning the batch mean.
        sites: Producer names, ``(producer, consumer)`` pairs or sites; default every supported site.
        max_batches: Stop after this many batches (a partial pass).
        train: Evaluate in train mode (BatchNorm batch statistics).
        batch_size: Batch size for a tensor pair.
        max_elements: Memory bound, see :func:`split_matrices`.
        progress: Show a progress bar over batches.

    Returns:
        The :class:`SplitStats`: ``A = sum_b (B_b / N) A_b``, the decomposition of the mean loss's gradient (for a
        class-weighted or ``ignore_index`` cross-entropy / NLL, ``B_b`` is the batch's summed weights, as torch's mean).

    Raises:
        ValueError: On a non-positive ``max_batches``.
        InputError: On empty data, NaN/inf in data or weights, or labels outside the output width (inputs
            are cast to the model's dtype, see :mod:`landscape.validation`).
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be positive, got {max_batches}")
    resolved = _resolve_sites(model, sites)
    total: dict[str, Tensor] = {}
    n_ex = n_b = 0
    n_w = 0.0  # the mean's denominator, as torch's mean of a weighted cross-entropy divides
    check_model(model)
    batches = iter_validated(data, model, loss_fn, batch_size=batch_size if is_tensor_pair(data) else None)
    for xb, yb in tqdm(batches, disable=not progress, desc="tunnel A", total=max_batches):
        part = split_matrices(model, (xb, yb), loss_fn, resolved, train=train, max_elements=max_elements)
        b = int(xb.shape[0])
        w = b if (c := weighted_count(loss_fn, yb)) is None else c  # examples, or the kept targets' class weights
        for p, a in part.items():
            total[p] = total[p] + w * a if p in total else w * a
        n_ex, n_b, n_w = n_ex + b, n_b + 1, n_w + w
        if max_batches is not None and n_b >= max_batches:
            break
    if n_b == 0:
        raise ValueError("data yielded no batch")
    method = StatsMethod.FULL if max_batches is None else StatsMethod.PARTIAL
    return SplitStats(tuple(resolved), {p: a / n_w for p, a in total.items()}, method.value, n_ex, n_b)


SOURCE_DEFAULTS: dict[str, Any] = {
    k: p.default for k, p in inspect.signature(split_stats).parameters.items() if p.kind is p.KEYWORD_ONLY
}
"""Defaults of :class:`SplitSource`'s keywords: :func:`split_stats`'s own, read from it (``None`` for the others)."""


class SplitAccumulator:
    """Exponential moving average of A over recent training steps (the paper's cheaper estimate).

    Call :meth:`update` from the training loop with the current model and batch (it costs one extra
    forward, backward and the jvps), then :meth:`stats` when opening. The average is bias-corrected:
    ``A = m / (1 - decay^n)`` with ``m <- decay m + (1 - decay) A_batch``, so ``decay=0`` keeps the
    last batch only. After the architecture changes (a tunnel opened), call :meth:`reset`.

    Args:
        loss_fn: ``loss_fn(output, target)`` returning the batch mean.
        sites: Producer names, pairs or sites; default every supported site of the first model seen.
        decay: Weight of the past, in ``[0, 1)``.
        train: Evaluate in train mode (BatchNorm batch statistics).
        max_elements: Memory bound, see :func:`split_matrices`.

    Attributes:
        n_updates_: Updates since the last reset.
        n_examples_: Examples seen since the last reset.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        sites: Sequence[Any] | None = None,
        *,
        decay: float = 0.9,
        train: bool = False,
        max_elements: int = 2**24,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.loss_fn, self.sites, self.decay, self.train, self.max_elements = loss_fn, sites, decay, train, max_elements
        self.reset()

    def reset(self) -> None:
        """Forget everything (call after the architecture changed)."""
        self._m: dict[str, Tensor] = {}
        self._sites: tuple[TunnelSite, ...] = ()
        self.n_updates_ = 0
        self.n_examples_ = 0

    def update(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> SplitAccumulator:
        """Fold the A of one batch into the average.

        Args:
            model: The current network (not modified).
            batch: ``(X, y)``.

        Returns:
            ``self``.

        Raises:
            RuntimeError: If the architecture changed since the last update (call :meth:`reset`).
        """
        sites = tuple(_resolve_sites(model, self.sites))
        check_model(model)
        (batch,) = validate_batches(batch, model, self.loss_fn, argname="batch")  # O(batch), beside a backward
        if self._sites and sites != self._sites:
            raise RuntimeError(
                "the model's tunnel sites changed since the last update (a tunnel was opened or closed); "
                "call reset() before updating with the new architecture"
            )
        part = split_matrices(model, batch, self.loss_fn, sites, train=self.train, max_elements=self.max_elements)
        for p, a in part.items():
            self._m[p] = self.decay * self._m[p] + (1 - self.decay) * a if p in self._m else (1 - self.decay) * a
        self._sites = sites
        self.n_updates_ += 1
        self.n_examples_ += int(batch[0].shape[0])
        return self

    def stats(self) -> SplitStats:
        """The bias-corrected average as :class:`SplitStats` (``method="ema"``).

        Raises:
            RuntimeError: Before the first update.
        """
        if not self.n_updates_:
            raise RuntimeError("no update yet: call update(model, batch) during training first")
        corr = 1 - self.decay**self.n_updates_
        return SplitStats(
            self._sites,
            {p: m / corr for p, m in self._m.items()},
            StatsMethod.EMA.value,
            self.n_examples_,
            self.n_updates_,
        )
