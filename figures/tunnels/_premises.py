"""Premises of the single-layer Tunnels figures: the start is a saddle, and the control stays stuck there."""

from __future__ import annotations

from typing import Any

import numpy as np

from figures.verdict import Premise, at_most

GRAD_TOL = 1e-5  # premise: the start is a critical point (full-batch gradient norm, float64)
STUCK_TOL = 0.02  # premise: the control's loss changes by less than 2% (relative, either way) over the run


def saddle_premises(info: dict[str, Any]) -> list[Premise]:
    """Premises of the start: a critical point (gradient norm) with negative curvature (a saddle, not a minimum)."""
    out = [
        at_most(
            "the start is a critical point (full-batch gradient norm, float64)",
            info["grad_norm"],
            GRAD_TOL,
            detail=f"loss there {info['loss']:.4f}",
        )
    ]
    if np.isfinite(info["min_eig"]):
        out.append(
            at_most(
                "the start is a saddle: the Hessian has a negative eigenvalue",
                info["min_eig"],
                0.0,
                detail=f"{info['n_negative']} eigenvalues below -1e-8; largest {info['max_eig']:.3g}",
            )
        )
    return out


def stuck_premise(curves: list[list[float]], steps: np.ndarray, what: str = "the control run stays stuck") -> Premise:
    """Premise: the control's full-batch loss stays within ``STUCK_TOL`` of its start, either way, per repetition.

    The measured value of a repetition is the largest ``|mean L over a quarter of the run - L(0)| / L(0)`` over the
    run's four quarters (the recordings after step 0 in ``(k T/4, (k+1) T/4]``; quarters without one are skipped): the
    paper's stuck run goes "without change of loss" (App. B), and a rise is a change as much as a drop. Until
    2026-12-07 only the drop to the last quarter counted ("noise above the start counts as 0"), so a control that SGD
    lifted 3-4% above the saddle's loss passed, and the claims "lower than the control by an escape" were partly
    measuring that rise (see :data:`STUCK_TOL`). Quarter means rather than single recordings: one recording of the
    full-batch loss under SGD at learning rate 1.0 scattered by several percent from step to step.

    Args:
        curves: Full-batch losses per repetition, shape ``(R, T)``; column 0 is the start.
        steps: The steps they were recorded at, shape ``(T,)``, starting at 0.
        what: The premise's statement.

    Returns:
        The premise, measured per repetition (a list of ``R`` values, each >= 0).
    """
    a = np.asarray(curves, dtype=float)
    st = np.asarray(steps, dtype=float)
    edges = np.linspace(0.0, st[-1], 5)
    masks = [(st > lo) & (st <= hi) for lo, hi in zip(edges[:-1], edges[1:])]
    masks = [m for m in masks if m.any()] or [np.arange(len(st)) == len(st) - 1]
    rel = np.stack([(a[:, m].mean(1) - a[:, 0]) / a[:, 0] for m in masks], 1)  # (R, quarters), signed: + is a rise
    worst = np.abs(rel).max(1)
    signed = rel[np.arange(len(rel)), np.abs(rel).argmax(1)]
    last = rel[:, -1]
    return at_most(
        what,
        worst.tolist(),
        STUCK_TOL,
        detail="largest relative change of the full-batch loss from the start (the saddle) to the mean of a quarter of "
        f"the run, either way, per repetition: {', '.join(f'{v:+.2%}' for v in signed)} (+ is a rise); in the last "
        f"quarter {', '.join(f'{v:+.2%}' for v in last)} (sd over the repetitions, other data orders, "
        f"{np.std(last, ddof=1) if len(last) > 1 else 0.0:.2%})",
    )
