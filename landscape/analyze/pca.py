"""Trajectory PCA (Lipton 2016, "Stuck in a what? Adventures in weight space").

Principal components of the snapshots of one or several training trajectories, scikit-learn
style: ``TrajectoryPCA(n_components=2).fit(traj)`` then ``components_``,
``explained_variance_ratio_``, ``transform``. Lipton centres on the mean of the trajectory
(Fig. 1-3: "the first two principal components explain 81.39% of the variance"); Li et al. (2018)
centre on the final point, which ``center="last"`` gives.

Streaming. With ``T`` snapshots of dimension ``D`` the fit never holds the ``T x D`` matrix. It
accumulates the ``T x T`` Gram matrix of the snapshots (in float64) from pairs of row blocks, takes
its eigendecomposition ``G_c = U diag(lambda) U^T``, and builds the components in a second pass,
``components = U_k^T X_c / sqrt(lambda_k)``. Memory: a resident block of ``block_size`` snapshots and a
streamed block of ``ceil(block_size / 4)`` (both in their stored dtype; together about ``memory_budget``
when ``block_size`` is derived from it), a 32 MiB float64 workspace for column panels, and ``k + 4``
float64 ``D``-vectors (reference point, sum, centre, mean, the ``k`` components). Because the store
reads snapshots whole, snapshots are re-read: about ``T + T^2 / (2 block_size)`` reads in the first
pass and ``T`` in the second; when everything fits in one block each snapshot is read twice.

Conventions: ``D``-dimensional quantities (``mean_``, ``components_``, plane directions) are float64
torch tensors, since they are points and directions in weight space; spectra and coordinates are
float64 numpy arrays, like scikit-learn's. Component signs follow scikit-learn's ``svd_flip`` with
``u_based_decision=False``: the entry of largest magnitude of each component is positive.
"""

from __future__ import annotations

import enum
import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.analyze.paths import LossAt, ProjectedPath, make_loss_at
from landscape.analyze.snapshots import SnapshotStack, Workspace, refuse_nonfinite, row_sqnorms
from landscape.evaluate.affine import AffinePoints
from landscape.evaluate.points import evaluate_points
from landscape.problem import Problem
from landscape.results import Provenance
from landscape.validation import InputTypeError, check_vector

__all__ = ["Center", "TrajectoryPCA"]


class Center(str, enum.Enum):
    """Where the PCA puts its origin (an int snapshot index or a ``(D,)`` vector are also accepted)."""

    MEAN = "mean"  # Lipton 2016: ordinary PCA
    FIRST = "first"  # the initialization
    LAST = "last"  # the final point (Li et al. 2018)


def _center_option(center: Any) -> Center | int | Tensor:
    if isinstance(center, Center):
        return center
    if isinstance(center, str):
        try:
            return Center(center)
        except ValueError:
            raise ValueError(
                f"unknown center {center!r}; valid: {[c.value for c in Center]}, a snapshot index, or a (D,) vector"
            ) from None
    if isinstance(center, bool):
        raise TypeError("center must be 'mean', 'first', 'last', a snapshot index or a (D,) vector, not a bool")
    if isinstance(center, int | np.integer):
        return int(center)
    if isinstance(center, np.ndarray):
        center = torch.from_numpy(center)
    if isinstance(center, Tensor):
        if center.dim() != 1:
            raise ValueError(f"a center vector must have shape (D,), got {tuple(center.shape)}")
        return center.detach()
    raise TypeError(f"center must be 'mean', 'first', 'last', an int or a (D,) vector, got {type(center).__name__}")


def _orthonormalize_rows(m: Tensor) -> None:
    """Modified Gram-Schmidt on the rows of ``m`` (k, D), in place, applied twice ("twice is enough").

    The Gram route leaves small components slightly non-orthogonal; this makes the PCA plane exactly
    orthonormal without the ``D x k`` copies a QR factorization would allocate. Row directions and signs
    are kept.
    """
    for _ in range(2):
        for i in range(m.shape[0]):
            for j in range(i):
                m[i].add_(m[j], alpha=-float(m[i] @ m[j]))
            m[i] /= m[i].norm()


def _auto_block(dim: int, itemsize: int, n: int, max_memory: int) -> int:
    return int(max(1, min(n, max_memory // max(1, int(1.25 * dim * itemsize)))))


class TrajectoryPCA:
    """Streamed PCA of the snapshots of one or several trajectories (scikit-learn estimator API).

    Args:
        n_components: Number of components ``k``, or a float in ``(0, 1)``: the smallest ``k`` whose
            cumulative explained variance ratio reaches it (as scikit-learn), or ``None`` for every direction
            the centred snapshots span (at most ``min(T, D)``; ``T - 1`` about the mean or a snapshot, whose
            centred snapshots are linearly dependent).
        center: ``"mean"`` (Lipton: ordinary PCA), ``"first"`` (the initial point), ``"last"`` (the final
            point, Li et al. 2018), an int index into the stacked snapshots, or a ``(D,)`` vector.
        block_size: Snapshots per resident block in the Gram pass; ``None`` derives it from ``memory_budget``.
        memory_budget: Approximate bytes (or ``"512MB"``) of snapshot blocks when ``block_size`` is ``None``
            (default 512 MiB).
        progress: Show tqdm bars over the passes.
        max_memory: Deprecated name of ``memory_budget``.

    Attributes:
        components_: Principal axes, float64 tensor ``(k, D)``, orthonormal rows.
        mean_: The centre, float64 tensor ``(D,)`` (the mean, or the chosen snapshot or vector).
        explained_variance_: ``lambda_k / (T - 1)``, numpy ``(k,)`` (second moment about the centre per
            degree of freedom; the variance for ``center="mean"``, as scikit-learn).
        explained_variance_ratio_: ``lambda_k / trace(G_c)``, numpy ``(k,)``: share of the total squared
            displacement from the centre.
        full_explained_variance_ratio_: The same for every eigenvalue of the centred Gram, numpy ``(T,)``.
        singular_values_: ``sqrt(lambda_k)``, numpy ``(k,)``.
        coordinates_: Coordinates of the fitted snapshots, ``U_k * s_k``, numpy ``(T, k)``.
        n_components_: ``k``.
        n_samples_: ``T`` (all trajectories together).
        n_features_in_: ``D``.
        lengths_: Snapshots per fitted trajectory.
        center_index_: Index of the centre snapshot for ``"first"``, ``"last"`` or an int, else ``None``.

    Example:
        >>> X = torch.randn(20, 100).cumsum(0)  # a random walk of 20 snapshots
        >>> pca = TrajectoryPCA(n_components=2).fit(X)
        >>> pca.components_.shape, pca.transform(X).shape
        (torch.Size([2, 100]), (20, 2))
    """

    def __init__(
        self,
        n_components: int | float | None = 2,
        *,
        center: str | Center | int | Tensor = Center.MEAN,
        block_size: int | None = None,
        memory_budget: int | str = 512 * 2**20,
        progress: bool = False,
        max_memory: int | None = None,
    ) -> None:
        from landscape._options import renamed

        self.n_components = n_components
        self.center = center
        self.block_size = block_size
        self.memory_budget = renamed(
            memory_budget if max_memory is None else None, max_memory, "max_memory", "memory_budget"
        )
        self.progress = progress

    # ------------------------------------------------------------------ fitting
    def _block(self, src: SnapshotStack) -> int:
        if self.block_size is not None:
            if int(self.block_size) < 1:
                raise ValueError(f"block_size must be a positive integer or None, got {self.block_size}")
            return int(self.block_size)
        from landscape._options import parse_bytes

        return _auto_block(src.dim, src.dtype.itemsize, src.n, parse_bytes(self.memory_budget))

    def _resolve_k(self, ratios: np.ndarray, n: int, d: int) -> int:
        k = self.n_components
        if k is None:  # every direction with variance (the threshold of the rank check in fit)
            return int((ratios > 1e-12 * ratios[0]).sum())
        if isinstance(k, float) and 0 < k < 1:
            return int(min(np.searchsorted(np.cumsum(ratios), k - 1e-12) + 1, len(ratios)))
        if isinstance(k, bool) or not isinstance(k, int | np.integer | float) or k < 1 or int(k) != k:
            raise ValueError(f"n_components must be a positive int, a float in (0, 1) or None, got {k!r}")
        if int(k) > min(n, d):
            raise ValueError(f"n_components={k} exceeds min(n_snapshots, n_parameters) = {min(n, d)}")
        return int(k)

    def _gram(
        self, src: SnapshotStack, center: Center | int | Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """First pass: Gram of the snapshots shifted by the first one, their sum, and ``y_i . u`` for a centre vector.

        Returns:
            ``(G (T, T), ref (D,), total (D,) or None, a (T,) or None)``, all float64; the sum of the
            shifted snapshots only for ``center="mean"``.
        """
        n, d, b = src.n, src.dim, self._block(src)
        s = max(1, math.ceil(b / 4))
        ref = src.read(0, 1)[0].to(torch.float64)  # shifting by a snapshot keeps the Gram entries small
        u = None
        if isinstance(center, Tensor):
            if center.shape[0] != d:
                raise ValueError(f"the center vector has {center.shape[0]} entries but the snapshots have {d}")
            u = center.to(torch.float64) - ref
        gram = torch.zeros(n, n, dtype=torch.float64)
        total = torch.zeros(d, dtype=torch.float64) if center is Center.MEAN else None
        a_vec = torch.zeros(n, dtype=torch.float64) if u is not None else None
        resident = torch.empty(min(b, n), d, dtype=src.dtype)
        stream = torch.empty(min(s, n), d, dtype=src.dtype) if b < n else None
        ws = Workspace(d, [min(b, n), min(s, n)])
        for i0 in tqdm(range(0, n, b), disable=not self.progress, desc="PCA Gram", leave=False):
            i1 = min(i0 + b, n)
            blk = src.read(i0, i1, resident)
            for cols in ws.panels():
                y = ws.shifted(0, blk, ref, cols)
                gram[i0:i1, i0:i1] += y @ y.T
                if total is not None:
                    total[cols] += y.sum(0)
                if a_vec is not None:
                    a_vec[i0:i1] += y @ u[cols]  # type: ignore[index]
            for j0 in range(i1, n, s):  # stream every later snapshot past the resident block
                j1 = min(j0 + s, n)
                other = src.read(j0, j1, stream)
                for cols in ws.panels():
                    gram[i0:i1, j0:j1] += ws.shifted(0, blk, ref, cols) @ ws.shifted(1, other, ref, cols).T
                gram[j0:j1, i0:i1] = gram[i0:i1, j0:j1].T
        return gram, ref, total, a_vec

    def fit(self, X: Any, y: Any = None, *, segment: int | None = None) -> TrajectoryPCA:
        """Fit the principal components of the snapshots of ``X``.

        Args:
            X: A :class:`~landscape.trajectory.store.Trajectory`, a ``(T, D)`` tensor or array, a list of ``(D,)``
                vectors or Snapshots, or a list of several Trajectories / ``(T_i, D)`` matrices fitted jointly
                (stacked in order).
            y: Ignored (scikit-learn compatibility).
            segment: For trajectories whose segments differ in size (a tunnel event), the segment to use.

        Returns:
            ``self``.

        Raises:
            ValueError: On fewer than two snapshots, mixed dimensions, a bad centre, or ``n_components``
                larger than the number of directions the snapshots span.
            InputError: If a snapshot holds NaN/inf (naming the snapshot, its step and its parameters).
        """
        center = _center_option(self.center)
        src = SnapshotStack(X, segment)
        n, d = src.n, src.dim
        if n < 2:
            raise ValueError(f"PCA needs at least two snapshots, got {n}")
        idx: int | None = None
        if isinstance(center, Center) and center is not Center.MEAN:
            idx = 0 if center is Center.FIRST else n - 1
        elif isinstance(center, int):
            if not -n <= center < n:
                raise ValueError(f"center index {center} out of range for {n} snapshots")
            idx = center % n
        if isinstance(center, Tensor):
            check_vector(center, "center")
        gram, ref, total, a_vec = self._gram(src, center)
        if not bool(torch.isfinite(gram.diagonal()).all()):  # ||y_i - y_0||^2: O(T) to test, the pass is done
            refuse_nonfinite(src)

        # Move the origin from the reference snapshot to the centre w: G_c = G - a 1^T - 1 a^T + kappa.
        if center is Center.MEAN:
            a = gram.mean(1)
            kappa = gram.mean()
            assert total is not None
            w = total.div_(n)  # in place: one D-vector less at the peak
        elif idx is not None:
            a, kappa = gram[:, idx].clone(), gram[idx, idx]
            w = src.read(idx, idx + 1)[0].to(torch.float64) - ref
        else:
            assert a_vec is not None and isinstance(center, Tensor)
            w = center.to(torch.float64) - ref
            a, kappa = a_vec, w @ w
        gc = gram - a[:, None] - a[None, :] + kappa
        gc = (gc + gc.T) / 2
        evals, evecs = torch.linalg.eigh(gc)
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        trace = float(gc.diagonal().sum())
        if trace <= 0:
            raise ValueError("all snapshots coincide with the centre: there is no variance to analyse")
        ratios = evals.numpy() / trace
        k = self._resolve_k(ratios, n, d)
        lam = evals[:k]
        if float(lam[-1]) <= 1e-12 * float(evals[0]):
            rank = int((evals > 1e-12 * evals[0]).sum())
            raise ValueError(
                f"the centred snapshots span only {rank} direction(s); use n_components <= {rank} (asked for {k})"
            )
        sing = lam.sqrt()
        coef = evecs[:, :k] / sing  # (T, k): components = coef^T (Y - w)

        # Second pass: components = sum_i coef_i (y_i - w).
        comp = torch.zeros(k, d, dtype=torch.float64)
        size = self._block(src)
        ws = Workspace(d, [min(size, n)])
        for a0, a1, blk in src.blocks(size, self.progress, "PCA components"):
            for cols in ws.panels():
                comp[:, cols] += coef[a0:a1].T @ ws.shifted(0, blk, ref, cols)
        for i, c in enumerate(coef.sum(0).tolist()):  # row by row: no (k, D) temporary
            comp[i].add_(w, alpha=-c)
        _orthonormalize_rows(comp)
        flip = torch.sign(comp.gather(1, comp.abs().argmax(1, keepdim=True)))[:, 0]
        flip[flip == 0] = 1
        comp *= flip[:, None]

        self.components_ = comp
        if center is Center.MEAN:
            self.mean_ = w.add_(ref)
        elif idx is not None:  # exactly the snapshot, not (x - ref) + ref
            self.mean_ = src.read(idx, idx + 1)[0].to(torch.float64)
        else:
            self.mean_ = center.to(torch.float64).clone()  # type: ignore[union-attr]
        self.singular_values_ = sing.numpy().copy()
        self.explained_variance_ = lam.numpy() / (n - 1)
        self.explained_variance_ratio_ = ratios[:k].copy()
        self.full_explained_variance_ratio_ = ratios.copy()
        self.coordinates_ = (evecs[:, :k] * sing * flip).numpy().copy()
        self.n_components_ = k
        self.n_samples_ = n
        self.n_features_in_ = d
        self.lengths_ = list(src.lengths)
        self.center_index_ = idx
        return self

    def fit_transform(self, X: Any, y: Any = None, *, segment: int | None = None) -> np.ndarray:
        """Fit and return the coordinates of the fitted snapshots, numpy ``(T, k)`` (no extra pass)."""
        return self.fit(X, segment=segment).coordinates_

    def __repr__(self) -> str:
        # The default repr said nothing: the options, and once fitted what was fitted and what it explains.
        c = self.center
        centre = f"vector {tuple(c.shape)}" if isinstance(c, Tensor) else repr(c.value if isinstance(c, Center) else c)
        if not hasattr(self, "components_"):
            return f"TrajectoryPCA(n_components={self.n_components!r}, center={centre}, not fitted)"
        ratios = ", ".join(f"{r:.3g}" for r in self.explained_variance_ratio_[:6])
        more = ", ..." if self.n_components_ > 6 else ""
        runs = _count(len(self.lengths_), "trajectory")
        return (
            f"TrajectoryPCA(k={self.n_components_}, center={centre}, fitted on {_count(self.n_samples_, 'snapshot')} "
            f"({runs}) of D={self.n_features_in_}, "
            f"explained_variance_ratio=[{ratios}{more}] (sum {float(self.explained_variance_ratio_.sum()):.3g}))"
        )

    # --------------------------------------------------------------- projecting
    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise RuntimeError("this TrajectoryPCA is not fitted yet; call fit(trajectory) first")

    def transform(self, X: Any, *, segment: int | None = None) -> np.ndarray:
        """Coordinates of snapshots in the principal axes, ``(x - mean_) @ components_.T``.

        Args:
            X: Anything :meth:`fit` accepts, or a single Snapshot / ``(D,)`` vector; several trajectories
                are stacked in order.
            segment: Segment to read from multi-segment trajectories.

        Returns:
            Numpy float64 array ``(T, k)``.

        Raises:
            ValueError: If the snapshots' dimension differs from the fitted one.
        """
        self._check_fitted()
        src = self._source(X, segment)
        out = np.zeros((src.n, self.n_components_))
        size = self._block(src)
        ws = Workspace(src.dim, [min(size, src.n)])
        for a, b, blk in src.blocks(size, self.progress, "PCA transform"):
            acc = torch.zeros(b - a, self.n_components_, dtype=torch.float64)
            for cols in ws.panels():
                acc += ws.shifted(0, blk, self.mean_, cols) @ self.components_[:, cols].T
            out[a:b] = acc.numpy()
        return out

    def inverse_transform(self, coords: np.ndarray | Tensor) -> Tensor:
        """Points in weight space for coordinates, ``mean_ + coords @ components_``, float64 ``(n, D)``."""
        self._check_fitted()
        c = torch.as_tensor(np.asarray(coords, dtype=np.float64))
        if c.dim() != 2 or c.shape[1] != self.n_components_:
            raise ValueError(f"coordinates must have shape (n, {self.n_components_}), got {tuple(c.shape)}")
        return self.mean_ + c @ self.components_

    def _source(self, X: Any, segment: int | None) -> SnapshotStack:
        src = SnapshotStack(X, segment)
        if src.dim != self.n_features_in_:
            raise ValueError(
                f"the snapshots have {src.dim} parameters but the PCA was fitted on {self.n_features_in_}; "
                "were they recorded from a different model?"
            )
        return src

    def cumulative_explained_variance(self, k: int) -> float:
        """Share of the total variance explained by the first ``k`` components (any ``k <= T``, not only fitted ones).

        Lipton (2016, §3): the first two explain 81.39%, the first ten 95.63% on his MNIST run.

        Raises:
            TypeError: If ``k`` is not an integer.
            ValueError: If ``k`` is not in ``[0, T]``.
        """
        self._check_fitted()
        n = len(self.full_explained_variance_ratio_)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"k must be an integer in [0, {n}], got {k!r}")
        if not 0 <= k <= n:
            raise ValueError(f"k must lie in [0, {n}], got {k}")
        return float(self.full_explained_variance_ratio_[: int(k)].sum())

    def plane_directions(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
        """The PCA plane for a plane slice: ``(center (D,), d1 (D,), d2 (D,))``.

        ``d1``, ``d2`` are the first two (orthonormal) components and ``center`` is ``mean_``, so a
        snapshot with ``transform`` coordinates ``(x, y)`` projects exactly onto
        ``center + x * d1 + y * d2``: surface and overlaid path share one coordinate system.

        Raises:
            ValueError: If fewer than two components were fitted.
        """
        self._check_fitted()
        if self.n_components_ < 2:
            raise ValueError(f"a plane needs two components; this PCA has n_components_={self.n_components_}")
        return self.mean_.to(dtype), self.components_[0].to(dtype), self.components_[1].to(dtype)

    def project(
        self,
        X: Any,
        *,
        loss_at: LossAt | Problem | None = None,
        points_per_call: int = 64,
        segment: int | None = None,
    ) -> ProjectedPath:
        """Project trajectories onto the PCA plane, with off-plane distances and optionally losses.

        Args:
            X: Trajectories or snapshots as for :meth:`transform`.
            loss_at: ``loss_at(vectors (n, D)) -> (n,)``, e.g. from :func:`make_loss_at`, or a
                :class:`~landscape.problem.Problem` (its mean loss); when given, each
                snapshot's true loss is reported beside the loss at its projection on the plane. With a
                problem (``bn_mode="eval"``), snapshots that stored buffers are evaluated as the models
                ``Trajectory.model_at`` rebuilds, on their own running statistics (a callable sees only vectors:
                the model's statistics); the projections run on the problem model's, as the plane's surface.
            points_per_call: Points passed to ``loss_at`` per call.
            segment: Segment to read from multi-segment trajectories.

        Returns:
            A :class:`ProjectedPath`.

        Raises:
            InputTypeError: If ``loss_at`` is a model (or not callable) rather than a problem or a loss function.
        """
        center, d1, d2 = self.plane_directions()
        dirs = torch.stack([d1, d2])
        src = self._source(X, segment)
        n = src.n
        coords = np.zeros((n, 2))
        full = np.zeros(n)
        off = np.zeros(n)
        prob = loss_at if isinstance(loss_at, Problem) else None
        if isinstance(loss_at, Problem):
            loss_at = make_loss_at(loss_at)
        elif isinstance(loss_at, nn.Module) or not (loss_at is None or callable(loss_at)):
            what = f"the model {type(loss_at).__name__}" if isinstance(loss_at, nn.Module) else type(loss_at).__name__
            raise InputTypeError(
                f"loss_at must be a landscape.Problem or a callable loss_at(vectors (n, D)) -> (n,), got {what}; "
                "pass Problem(model, data, loss) or make_loss_at(model, data)"
            )
        true_loss = np.full(n, np.nan) if loss_at is not None else None
        plane_loss = np.full(n, np.nan) if loss_at is not None else None
        size = min(self._block(src), max(1, points_per_call)) if loss_at is not None else self._block(src)
        ws = Workspace(src.dim, [min(size, n)])
        for a, b, blk in src.blocks(size, self.progress, "PCA project"):
            xy = torch.zeros(b - a, 2, dtype=torch.float64)
            sq = torch.zeros(b - a, dtype=torch.float64)
            for cols in ws.panels():
                r = ws.shifted(0, blk, center, cols)
                xy += r @ dirs[:, cols].T
                sq += row_sqnorms(r)
            res = torch.zeros(b - a, dtype=torch.float64)
            for cols in ws.panels():  # residual norm directly: no cancellation when it is small
                res += row_sqnorms(ws.shifted(0, blk, center, cols).addmm_(xy, dirs[:, cols], alpha=-1))
            coords[a:b], full[a:b], off[a:b] = xy.numpy(), sq.sqrt().numpy(), res.sqrt().numpy()
            if loss_at is not None:
                own = None if prob is None else _own_buffers(prob, src, a, b)
                if prob is not None and own is not None:
                    true_loss[a:b] = _snapshot_losses(prob, blk, own)  # type: ignore[index]
                else:
                    true_loss[a:b] = _call_loss(loss_at, blk, b - a)  # type: ignore[index]
                pts = (center + xy @ dirs).to(blk.dtype)
                plane_loss[a:b] = _call_loss(loss_at, pts, b - a)  # type: ignore[index]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(full > 0, off / np.where(full > 0, full, 1.0), 0.0)
        c = _center_option(self.center)
        return ProjectedPath(
            coordinates=coords,
            displacement=full,
            off_plane=off,
            off_plane_ratio=ratio,
            run=src.run,
            steps=src.meta("steps"),
            epochs=src.meta("epochs"),
            explained_variance_ratio=self.explained_variance_ratio_[:2].copy(),
            true_loss=true_loss,
            plane_loss=plane_loss,
            center=c.value if isinstance(c, Center) else ("vector" if isinstance(c, Tensor) else f"index {c}"),
            provenance=Provenance.here(data=f"{_count(len(src.lengths), 'trajectory')}, {_count(n, 'snapshot')}"),
        )


def _count(n: int, noun: str) -> str:
    """``"1 trajectory"``, ``"2 trajectories"``, ``"3 snapshots"``: the noun in the number it needs."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def _own_buffers(prob: Problem, src: SnapshotStack, start: int, stop: int) -> list[dict[str, Tensor]] | None:
    """The buffers snapshots ``[start, stop)`` stored, in the problem's dtype, or ``None``.

    ``None`` (the problem model's buffers are used) unless every snapshot stored the model's buffers (by name) and
    the problem runs on running statistics (``bn_mode="eval"``).
    """
    if prob.bn_mode != "eval":
        return None
    rows = src.buffers(start, stop)
    names = {k for k, _ in prob.model.named_buffers()}
    if rows is None or not names or any(set(r) != names for r in rows):
        return None
    cast = lambda v: v.to(device=prob.device, dtype=prob.dtype) if v.is_floating_point() else v.to(prob.device)  # noqa: E731
    return [{k: cast(v) for k, v in r.items()} for r in rows]


def _snapshot_losses(prob: Problem, blk: Tensor, own: list[dict[str, Tensor]]) -> np.ndarray:
    """The mean loss of each row of ``blk`` ``(n, D)`` on its own buffers (as ``Trajectory.model_at`` rebuilds it)."""
    pts = AffinePoints(blk.to(prob.dtype, copy=True), np.eye(len(own)), own)  # point i: row i with buffers i
    return np.asarray(evaluate_points(prob, pts, metrics=("loss",), bn_mode="interpolate")["loss"], np.float64)


def _call_loss(loss_at: LossAt, pts: Tensor, n: int) -> np.ndarray:
    out = loss_at(pts)
    out = torch.as_tensor(out).detach().reshape(-1)
    if out.numel() != n:
        raise ValueError(f"loss_at returned {out.numel()} values for {n} points; it must map (n, D) -> (n,)")
    return out.to(torch.float64).numpy()
