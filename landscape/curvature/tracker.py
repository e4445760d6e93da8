"""Hessian curvature of one model after another, each Lanczos run warm-started from the previous one.

:class:`CurvatureTracker` is the measurement behind :func:`~landscape.curvature.training.trajectory_curvature`
and :class:`~landscape.curvature.training.CurvatureRecorder`: at each point (a snapshot, or the model being
trained) the top-``k`` Hessian eigenpairs of the full-data loss, optionally the Hutch++ trace and the top
eigenvalue of each layer's diagonal block. Lanczos starts from a polynomial extrapolation (in the step) of
the last points' eigenvectors: consecutive points have close Hessians, and the residual stopping rule is
that of a cold start, so only the number of Hessian-vector products changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.curvature.eigensolver import top_eigenpairs
from landscape.curvature.hessian import _BATCH_NORM, HessianOperator
from landscape.curvature.spectrum import hessian_eigenpairs, hessian_trace
from landscape.functional import BNMode
from landscape.problem import Problem
from landscape.results import Provenance

__all__ = ["CurvatureTracker"]

LossFn = Callable[[Tensor, Tensor], Tensor]
TOP_KEY = "\x00top-k"  # history key of the top-k vectors (layer names may be "")


class CurvatureTracker:
    """Curvature of one model after another, each Lanczos run warm-started from the previous point's vectors.

    Calling it on a model measures the top-``k`` eigenpairs (and optionally per-layer top eigenvalues and
    the Hutch++ trace) of that model's Hessian and appends a row to :attr:`rows`: ``values``, ``bounds``,
    ``residuals`` (each ``(k,)``, NaN-padded), ``converged`` (the top-k's run and, with ``per_layer``, every
    layer's), ``trace``, ``trace_stderr``, ``layers`` (layer name -> top eigenvalue) and ``hvps``. Start
    vectors are kept per key (:data:`TOP_KEY` for the top-k, a layer name for its block) with the step they
    were found at.
    """

    def __init__(
        self,
        loss_fn: LossFn | None,  # None when data is a Problem (it holds the loss)
        data: Any,
        *,
        k: int,
        tol: float,
        warm_start: bool,
        per_layer: bool,
        trace_products: int,
        max_steps: int | None,
        block: int | None,
        bn_mode: BNMode | str | None,
        dtype: torch.dtype | None,
        seed: int,
        extrapolate: int = 2,
        certify: bool = True,
        params: str | Sequence[str] | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        if trace_products < 0 or trace_products in (1, 2):  # (1 or 2: Hutch++ refused them at the first point)
            raise ValueError(
                f"trace_products must be 0 (no trace) or at least 3 (Hutch++'s least budget), got {trace_products}"
            )
        self.loss_fn, self.data = loss_fn, data
        self.k, self.tol, self.warm_start, self.per_layer = int(k), float(tol), bool(warm_start), bool(per_layer)
        self.trace_products, self.max_steps, self.block = int(trace_products), max_steps, block
        self.certify = bool(certify)
        self.params = params if params is None or isinstance(params, str) else list(params)
        if bn_mode is None:  # the problem's, as everywhere a Problem is given (eval for plain data)
            bn_mode = data.bn_mode if isinstance(data, Problem) else BNMode.EVAL
        self.bn_mode, self.dtype, self.seed = BNMode(bn_mode), dtype, int(seed)
        self.extrapolate = int(extrapolate)
        if self.extrapolate < 0:
            raise ValueError(f"extrapolate must be >= 0, got {extrapolate}")
        self._history: dict[str, list[tuple[float, Tensor]]] = {}  # TOP_KEY or a layer -> (step, vectors)
        self.step = 0.0
        self.layer_names: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.n_samples = 0
        self._problem: Problem | None = None
        self._micro: tuple[Any, int] | None = None  # (the network's shapes, the size "auto" chose for them)
        # what the operators computed (their dtype, the model's, the loss reduction, notes), for the provenance
        self._computed: dict[str, list[Any]] = {}

    def start_vectors(self, key: str, n: int) -> Tensor | None:
        """Start vectors at the current step: the last vectors, or a polynomial through the last few.

        Along a trajectory the eigenvectors move smoothly with the step, so a Lagrange extrapolation through
        the last ``extrapolate + 1`` points starts Lanczos closer than the last vectors alone (on the
        benchmark trajectory, k = 1, ``certify=False``: 2.16x fewer products than a cold start, against 1.56x from
        the last vectors; with the default completeness check, which a warm start pays at every point, 1.19x).
        """
        hist = self._history.get(key, [])
        if not self.warm_start or not hist or hist[-1][1].shape[0] != n:
            return None
        hist = hist[-(self.extrapolate + 1) :]
        steps = [t for t, _ in hist]
        if len(set(steps)) < len(steps) or self.step in steps[:-1]:
            return hist[-1][1]
        out = torch.zeros_like(hist[-1][1])
        for j, (tj, vj) in enumerate(hist):
            w = math.prod((self.step - tm) / (tj - tm) for m, (tm, _) in enumerate(hist) if m != j)
            out += w * vj
        return out

    def remember(self, key: str, vectors: Tensor) -> None:
        """Keep the vectors, columns matched to the last ones (order by overlap, sign) so they extrapolate."""
        hist = self._history.setdefault(key, [])
        if hist and hist[-1][1].shape == vectors.shape:
            last = hist[-1][1]
            overlap = (last.T @ vectors).abs()  # (k, k)
            order, free = [], list(range(vectors.shape[1]))
            for i in range(vectors.shape[1]):  # greedy: each previous column takes its closest new one
                j = max(free, key=lambda c: float(overlap[i, c]))
                order.append(j)
                free.remove(j)
            vectors = vectors[:, order]
            vectors = vectors * torch.sign((last * vectors).sum(0) + 1e-300)
        elif hist:
            hist.clear()  # another shape: the network changed, or fewer vectors
        hist.append((self.step, vectors))
        del hist[: -(self.extrapolate + 1)]

    def __call__(self, model: nn.Module, step: float = 0.0) -> dict[str, Any]:
        """Measure ``model`` (at optimizer step ``step``, for the extrapolation) and append its row.

        Returns:
            The row (see the class docstring); all NaN for non-finite weights or a failed eigensolve.
        """
        self.step = float(step)
        # A diverged run (gradient descent above its stability limit) reaches non-finite weights or products:
        # its curvature is recorded as NaN instead of ending the training or the scan.
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            return self._nan_row()
        try:
            return self._measure(model)
        except np.linalg.LinAlgError:
            return self._nan_row()

    def _nan_row(self) -> dict[str, Any]:
        nan = np.full(self.k, np.nan)
        self._history = {}
        row = {
            "values": nan,
            "bounds": nan,
            "residuals": nan,
            "converged": False,
            "trace": math.nan,
            "trace_stderr": math.nan,
            "layers": {},
            "hvps": 0,
        }
        self.rows.append(row)
        return row

    def _measure(self, model: nn.Module) -> dict[str, Any]:
        # One Problem: the data are read, checked and cast once; each snapshot's model reuses them.
        if self._problem is None:
            if isinstance(self.data, Problem):
                self._problem = self.data.with_model(model)
            else:
                self._problem = Problem(model, self.data, self.loss_fn, bn_mode=self.bn_mode.value, dtype=self.dtype)
        else:
            self._problem = self._problem.with_model(model)
        # "auto" micro-batches: the probe's size depends on the shapes only, so it is found once per network (the
        # same micro-batches, without two extra graphs at every point)
        shapes = [(n, t.shape, t.dtype, t.requires_grad) for n, t in model.named_parameters()]
        shapes += [(n, t.shape, t.dtype, False) for n, t in model.named_buffers()]
        micro = self._micro[1] if self._micro is not None and self._micro[0] == shapes else "auto"
        op = HessianOperator(
            self._problem, params=self.params, bn_mode=self.bn_mode, dtype=self.dtype, micro_batch_size=micro
        )
        if op.auto_micro_batch_size is not None:
            self._micro = (shapes, op.auto_micro_batch_size)
        self.n_samples = op.n_samples
        found = (
            ("dtype", str(op.dtype)),
            ("model_dtype", str(op.model_dtype)),
            ("reduction", op.reduction),
            ("batchnorm", any(isinstance(m, _BATCH_NORM) for m in model.modules())),  # else bn_mode changes nothing
            *(("notes", note) for note in op.notes),
        )
        for key, value in found:  # each value once, in order of appearance (snapshots may differ)
            seen = self._computed.setdefault(key, [])
            if value not in seen:
                seen.append(value)
        k = min(self.k, op.n)
        pairs = hessian_eigenpairs(
            op,
            k,
            tol=self.tol,
            max_steps=self.max_steps,
            seed=self.seed,
            block=self.block,
            v0=self.start_vectors(TOP_KEY, op.n),
            certify=self.certify,
        )
        self.remember(TOP_KEY, pairs.vectors)
        row: dict[str, Any] = {
            "values": pad_nan(pairs.values.numpy(), self.k),
            "bounds": pad_nan(pairs.error_bounds.numpy(), self.k),
            "residuals": pad_nan(pairs.residuals.numpy(), self.k),
            "converged": pairs.converged,
            "trace": math.nan,
            "trace_stderr": math.nan,
            "layers": {},
        }
        if self.per_layer:
            row["layers"], layers_converged = self._layers(op)
            # converged: every Lanczos run of the point met the tolerance (a layer's too, else its value is unflagged)
            row["converged"] = row["converged"] and layers_converged
        if self.trace_products:
            est = hessian_trace(op, self.trace_products, seed=self.seed + 2)
            row["trace"], row["trace_stderr"] = est.estimate, est.stderr
            seen = self._computed.setdefault("trace_exact", [])  # exact when trace_products >= the dimension
            if est.exact not in seen:
                seen.append(est.exact)
        row["hvps"] = op.hvp_count
        self.rows.append(row)
        return row

    def _layers(self, op: HessianOperator) -> tuple[dict[str, float], bool]:
        """Top eigenvalue of each layer's diagonal block ``P_l H P_l^T``, by products of the full operator.

        Returns:
            Layer name -> top eigenvalue, and whether every layer's run converged.
        """
        out = {}
        converged = True
        eps = float(torch.finfo(op.dtype).eps)
        gen = torch.Generator()
        # a layer's positions in the operator's vector (its selected parameters only: params= may leave some out)
        position = torch.full((op.layout.numel,), -1, dtype=torch.long)
        position[op.index] = torch.arange(op.n)
        for name in op.layout.layers:
            idx = position[op.layout.layer_index(name)]
            idx = idx[idx >= 0]
            if len(idx) == 0:
                continue

            def block(V: Tensor, idx: Tensor = idx) -> Tensor:
                full = V.new_zeros(op.n, V.shape[1])
                full[idx] = V
                return op.matmat(full)[idx]

            pairs = top_eigenpairs(
                block,
                len(idx),
                1,
                tol=self.tol,
                max_steps=self.max_steps,
                generator=gen.manual_seed(self.seed),
                breakdown=100 * eps,
                eps=eps,
                v0=self.start_vectors(name, len(idx)),
                certify=self.certify,
            )
            self.remember(name, pairs.vectors)
            out[name] = float(pairs.values[0])
            converged = converged and pairs.converged
            if name not in self.layer_names:
                self.layer_names.append(name)
        return out, converged

    def provenance(self, data_description: str, **extra: Any) -> Provenance:
        """Provenance of the measurements: seed, data, options, threads, what was computed, plus ``extra``.

        What was computed: ``dtype`` (of the Hessian products), ``model_dtype``, the loss ``reduction`` (one
        value, or the list of the values the measured models gave), ``batchnorm`` (whether any measured model
        has BatchNorm: without, ``bn_mode`` changes nothing), the operators' ``notes`` and, with a trace,
        ``trace_exact`` (whether the traces are exact: ``trace_products`` at least the dimension).
        """
        return Provenance.here(
            seed=self.seed,
            data=data_description or f"{self.n_samples} samples",
            trace_products=self.trace_products,
            params="all" if self.params is None else self.params,
            max_steps=self.max_steps,
            block=self.block,
            certify=self.certify,
            extrapolate=self.extrapolate,
            threads=torch.get_num_threads(),
            # as measured: one value, or every value the snapshots gave (in order); none before a measurement
            **{k: v[0] if len(v) == 1 else v for k, v in self._computed.items() if k not in ("notes", "batchnorm")},
            batchnorm=any(self._computed.get("batchnorm", [])),
            notes=list(self._computed.get("notes", [])),
            **extra,
        )


def pad_nan(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` padded with NaN to length ``k`` (a model with fewer than ``k`` parameters)."""
    out = np.full(k, np.nan)
    out[: len(a)] = a
    return out
