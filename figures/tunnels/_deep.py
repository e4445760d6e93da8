"""Shared experiment of Tunnels Fig. 2 right and Table 3 (private to ``figures/tunnels/``).

Sec. 4.4, App. B.3 and C.2: tunnel opening in the 5-conv-layer CNN (Fig. 2 right) and its wall-clock cost
(Table 3). One cached computation, :func:`deep_runs`, serves both figures (``figures/tunnels/fig2_right.py`` and
``figures/tunnels/table3.py``).

The paper (App. B.3): 5 conv layers of 64 filters, ReLU, BatchNorm and max pooling of stride 2 on the first three, a
softmax layer; ImageNet 64x64 (pixel means subtracted), minibatch 256, Adam with learning rate 2e-5. "We find a flat
area by exploring different random initializations until we get stuck in a large flat area. We then re-use this
initialization for all experiments"; the repetitions differ in the shuffling of the data. At step 5000 one filter is
added to each of the last two hidden layers; Adam's and BatchNorm's buffers are cleared and the learning rate is reduced
10x for 20 steps, in the opened runs and in the control run alike.

Here: ``landscape.models.TunnelsCNN`` (BatchNorm and pooling on conv1-conv3, as the paper); the initialization search
is the paper's, with a criterion fixed in advance (:func:`is_stuck`); the matrices A come from a full pass over the
training data in train mode (BatchNorm batch statistics: the gradient Adam follows); the opened unit of each layer is
its largest-rho filter (the same unit for proposed and random lambda); the warm-up ramps the learning-rate factor
linearly from 0.1 to 1 over 20 steps (``TunnelSchedule``; the paper holds 0.1 for 20 steps). All arms of one
repetition continue from that repetition's state at the opening step and see the same data order afterwards (a
paired comparison), so their curves coincide up to the opening, as in the paper's figure. The training loss is the
minibatch loss of every step (train mode), as the optimizer sees it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from figures.contract import Scale, figure_function, require_data
from figures.tunnels._deep_data import IMAGENET64_DIR, load_deep_data
from figures.tunnels._deep_setup import DEEP_ARMS, NEON_ETA_LMAX, DeepSetup, make_deep_setup
from figures.tunnels._setup import NEON_IMAGES, NEON_KW, PGD_KW, MeasuredNEON, MeasuredPGD
from landscape.curvature import hessian_eigenpairs
from landscape.data import iterate_batches
from landscape.models import build_model
from landscape.params import parameter_mask, parameters_to_vector
from landscape.problem import Problem
from landscape.train import Callback, Trainer
from landscape.trajectory import cached_json
from tunnels.split import SplitStats, split_matrices
from tunnels.training import TunnelSchedule


def tie_units(model: nn.Module) -> nn.Module:
    """Tie conv4 and conv5 of a ``TunnelsCNN`` to one filter each, in place: the symmetric start of ``"tied"``.

    Every conv4 filter (and bias) becomes a copy of filter 0; every conv5 filter becomes a copy of filter 0 with its
    inbound weight from conv4's filter 0 copied to every input slot; fc1's weights from conv5's map 0 are copied to
    every map's block. The network then computes as one with a single filter in conv4 and conv5 (a bottleneck), and
    it stays so under Adam: identical units with identical outbound weights get identical gradients from every
    minibatch, Adam's update is elementwise, so the copies never separate (the tests check it bitwise). A minimum of
    that bottleneck network is a critical point of the full one, in general a saddle (Fukumizu & Amari 2000), and
    the control run, confined to the tied subspace, cannot leave it; an opening breaks the symmetry.

    Returns:
        ``model``.
    """
    c4, c5, fc = model.get_submodule("conv4"), model.get_submodule("conv5"), model.get_submodule("fc1")
    k = c5.out_channels
    with torch.no_grad():
        c4.weight.copy_(c4.weight[:1].expand_as(c4.weight).clone())
        c4.bias.fill_(float(c4.bias[0]))
        c5.weight.copy_(c5.weight[:1, :1].expand_as(c5.weight).clone())
        c5.bias.fill_(float(c5.bias[0]))
        per = fc.in_features // k  # flatten keeps each map contiguous
        fc.weight.copy_(fc.weight[:, :per].repeat(1, k))
    return model


def tied_spread(model: nn.Module) -> float:
    """Largest absolute difference between any conv4 / conv5 filter (or fc1 block) and filter 0: 0 when tied."""
    c4, c5, fc = model.get_submodule("conv4"), model.get_submodule("conv5"), model.get_submodule("fc1")
    per = fc.in_features // c5.out_channels
    w4, b4, w5, b5, w = (t.detach() for t in (c4.weight, c4.bias, c5.weight, c5.bias, fc.weight))
    return float(
        max(
            (w4 - w4[:1]).abs().max(),
            (b4 - b4[0]).abs().max(),
            (w5 - w5[:1, :1]).abs().max(),
            (b5 - b5[0]).abs().max(),
            (w - w[:, :per].repeat(1, c5.out_channels)).abs().max(),
        )
    )


def is_stuck(losses: list[float] | np.ndarray, window: int, tol: float) -> tuple[bool, float]:
    """The stuck criterion, fixed before any run: ``(stuck, relative change)``.

    Args:
        losses: Minibatch losses of the steps before the opening, shape ``(open_at,)``.
        window: Steps per window.
        tol: Largest relative change of a stuck run.

    Returns:
        Whether ``|mean(last window) - mean(window before)| < tol * mean(last window)``, and that relative change.
    """
    a = np.asarray(losses, dtype=float)
    last, before = a[-window:].mean(), a[-2 * window : -window].mean()
    rel = float(abs(last - before) / max(abs(last), 1e-12))
    return rel < tol, rel


class TimedTunnelSchedule(TunnelSchedule):
    """A :class:`~tunnels.training.TunnelSchedule` that times its opening (for Table 3).

    ``times_`` holds wall-clock seconds: ``"a"`` (the pass over the data for the matrices A), ``"eigen"`` (the SVD of
    every unit's A, which ranks the units by rho; done here, so the surgery finds it cached) and ``"open"`` (the whole
    opening: A, eigen-analysis, surgery, BatchNorm reset, optimizer rebuild; for the control only the last two). The
    surgery redoes the SVD of the opened units alone (conv5's A gains rows for conv4's clone), so that small part
    counts as surgery. Only the total is visible through the public hooks, hence the two private steps overridden.
    """

    def _reset_state(self) -> None:
        super()._reset_state()
        self.times_: dict[str, float] = {"a": 0.0, "eigen": 0.0, "open": 0.0}

    def _compute_stats(self, trainer: Trainer) -> SplitStats | None:
        t0 = time.perf_counter()
        stats = super()._compute_stats(trainer)
        t1 = time.perf_counter()
        if stats is not None:
            for p in stats.A:
                stats.principal(p)  # cached in stats: open_tunnels reuses it
        self.times_["a"] += t1 - t0
        self.times_["eigen"] += time.perf_counter() - t1
        return stats

    def _open(self, trainer: Trainer) -> None:
        t0 = time.perf_counter()
        super()._open(trainer)
        self.times_["open"] += time.perf_counter() - t0


def _train_losses(trainer: Trainer) -> tuple[list[float], float]:
    """Run a trainer to the end: its minibatch losses (train mode) and wall-clock seconds."""
    t0 = time.perf_counter()
    losses = [ev.loss for ev in trainer]
    return losses, time.perf_counter() - t0


def _binned(a: list[float], width: int) -> list[float]:
    x = np.asarray(a, dtype=float)
    n = len(x) // width * width
    out = x[:n].reshape(-1, width).mean(1).tolist()
    return out + ([float(x[n:].mean())] if n < len(x) else [])


def _full_grad_sq(model: nn.Module, data: Any, batch_size: int, max_batches: int | None) -> float:
    """Squared norm of the gradient of the mean training loss (train-mode BatchNorm, batches weighted by size).

    The Problem's gradient over the first ``max_batches`` batches, restricted to the trainable parameters.
    """
    batches = iterate_batches(data, batch_size if isinstance(data, tuple) else None)
    batches = list(itertools.islice(batches, max_batches))
    prob = Problem(model, batches, "cross_entropy", bn_mode="train")
    g = prob.grad()[parameter_mask(model, "trainable", prob.layout)]
    return float(g.double().square().sum())


def _full_loss(model: nn.Module, data: Any, batch_size: int, max_batches: int | None) -> float:
    """Mean training loss over the first ``max_batches`` batches (train-mode BatchNorm, as the optimizer sees it).

    The same fixed batches every time, so two evaluations differ only by the weights (the minibatch losses of the
    curves also differ by the batch drawn: about 1% noise in a 50-step mean at the quick scale).
    """
    batches = iterate_batches(data, batch_size if isinstance(data, tuple) else None)
    prob = Problem(copy.deepcopy(model), list(itertools.islice(batches, max_batches)), "cross_entropy", bn_mode="train")
    return float(prob.loss())


class _LossAt(Callback):
    """Records :func:`_full_loss` after one step."""

    def __init__(self, step: int, fn: Callable[[nn.Module], float]) -> None:
        self.step, self.fn, self.value = step, fn, float("nan")

    def on_step_end(self, trainer: Trainer, event: Any) -> None:  # noqa: D102
        if event.step == self.step:
            self.value = self.fn(trainer.model)


class _Baselines:
    """The baseline arms of the deep-CNN runs (:attr:`DeepSetup.baselines`): their callbacks and their records.

    NEON's objective is the mean loss over the first ``NEON_IMAGES`` training images in minibatches of the run's
    size, with train-mode BatchNorm (the loss Adam's steps descend); its power-iteration step is ``NEON_ETA_LMAX``
    over the largest Hessian eigenvalue of that objective at repetition 0's opening point (NEON needs a step below
    1 / L). Nothing here runs when there are no baselines.
    """

    def __init__(self, s: DeepSetup, stats_data: Any) -> None:
        self.s = s
        bs = s.batch_size if isinstance(stats_data, tuple) else None
        self.batches = list(itertools.islice(iterate_batches(stats_data, bs), max(1, NEON_IMAGES // s.batch_size)))
        self.lam_max = self.eta = float("nan")
        self.moves: dict[str, list[list[float]]] = {a: [] for a in s.baselines}
        self.untied: dict[str, list[float]] = {a: [] for a in s.baselines}
        self.neon_curvatures: list[list[float]] = []
        self.weight_norm: list[float] = []
        self._mover: MeasuredPGD | MeasuredNEON | None = None

    def at_opening(self, state: nn.Module) -> None:
        """Record the weight norm at a repetition's opening point (and at the first, NEON's eta)."""
        if not self.s.baselines:
            return
        self.weight_norm.append(float(parameters_to_vector(state).norm()))
        if "neon" in self.s.baselines and not np.isfinite(self.lam_max):
            prob = Problem(copy.deepcopy(state), self.batches, "cross_entropy", bn_mode="train")
            self.lam_max = float(hessian_eigenpairs(prob, k=1, tol=1e-3).values[0])
            self.eta = NEON_ETA_LMAX / self.lam_max

    def callbacks(self, arm: str, rep: int) -> list[Callback]:
        """The callback of a baseline arm (none for the other arms); escapes start at the first step after opening."""
        if arm == "pgd":
            self._mover = MeasuredPGD(1, seed=rep, **PGD_KW)
        elif arm == "neon":
            kw = {**NEON_KW, "eta": self.eta}
            self._mover = MeasuredNEON(1, self.batches, seed=rep, bn_mode="train", **kw)
        else:
            self._mover = None
        return [] if self._mover is None else [self._mover]

    def record(self, arm: str, model: nn.Module) -> None:
        """After a baseline arm's run: the norms of its weight changes, its spread from the tied subspace."""
        m = self._mover
        if m is None:
            return
        self.moves[arm].append(m.moves_)
        self.untied[arm].append(tied_spread(model) if self.s.start == "tied" else float("nan"))
        if isinstance(m, MeasuredNEON):
            self.neon_curvatures.append([c for _, c in m.curvatures_])

    def result(self) -> dict[str, Any]:
        """The records (keys of :func:`deep_runs`'s result)."""
        return {
            "moves": self.moves,
            "untied": self.untied,
            "neon_curvatures": self.neon_curvatures,
            "neon_eta": self.eta,
            "lam_max": self.lam_max,
            "weight_norm": self.weight_norm,
            "neon_images": sum(len(b[1]) for b in self.batches),
        }


def deep_runs(setup: DeepSetup, data_dir: Path | None, cache: Path | None, progress: bool = False) -> dict[str, Any]:
    """Run (or read from the cache) the deep-CNN experiment of Fig. 2 right, timing every part for Table 3.

    For the first initialization seed whose repetition-0 run passes :func:`is_stuck` at ``open_at`` (at most
    ``max_inits`` tried; if none passes, the last one is used and ``stuck_found`` is false), every repetition trains
    from that initialization to ``open_at`` with its own data order, then continues three ways from the same state
    and with the same later data order: ``control`` (optimizer and BatchNorm buffers reset and warm-up only),
    ``proposed`` and ``random`` (one filter opened in conv4 and in conv5). Cached as JSON under ``cache``
    (``deep_<key>.json``) behind a lock, so Fig. 2 right and Table 3 train it once.

    Args:
        setup: The settings.
        data_dir: The user's data directory (full scale).
        cache: Cache directory, or ``None`` to always compute.
        progress: Show tqdm bars.

    Returns:
        JSON-compatible dict: ``init_seed``, ``stuck_found``, ``tried`` (``[seed, relative change]``), ``stuck_reps``
        (relative change per repetition), ``curves`` (arm -> per-repetition minibatch losses binned by ``bin``
        steps), ``loss_open`` (per repetition, mean over the window before opening), ``loss_end`` (arm -> per
        repetition, mean over the last window), ``times`` (``pre`` per repetition; ``post``, ``open``, ``a``,
        ``eigen`` per arm and repetition, seconds), ``step_time`` (seconds per training step), ``grad_sq`` (squared
        full-batch gradient norm at the opening point of repetition 0), ``rho`` (arm -> site -> rho of the opened
        unit, repetition 0), ``units`` (arm -> site -> opened unit, repetition 0) and ``data``. Full training loss
        over fixed batches (:func:`_full_loss`): ``full_before`` (step ``open_at - window``), ``full_open`` (the
        opening) per repetition; ``full_tail`` (``window`` steps before the end) and ``full_end`` per arm and
        repetition; ``stuck_full`` (its relative change before the opening). ``converge`` (tied start: the shared
        convergence run's binned ``curve``, ``sec``, ``steps`` and ``grad_sq_init``, the squared gradient norm at the
        tied initialization; empty for the search) and ``tied_spread`` (per repetition, :func:`tied_spread` of the
        control at its end; ``nan`` for the search).
    """
    if setup.data == "imagenet64":  # fail before anything slow
        require_data(
            data_dir,
            IMAGENET64_DIR,
            what=f"downsampled ImageNet 64x64 (Imagenet64_train_npz: train_data_batch_1..10.npz in {IMAGENET64_DIR}/)",
        )
    path = None if cache is None else Path(cache) / f"deep_{setup.key()}.json"
    return cached_json(path, lambda: _deep_runs(setup, data_dir, progress))  # type: ignore[no-any-return]


def _deep_runs(s: DeepSetup, data_dir: Path | None, progress: bool) -> dict[str, Any]:
    data, shape, classes, desc = load_deep_data(s, data_dir)
    pair = isinstance(data, tuple)
    loss = nn.functional.cross_entropy
    bs = s.batch_size if pair else None

    def train_data(order_seed: int) -> Any:
        return data if pair else data.with_order(True, order_seed)

    def trainer(model: nn.Module, steps: int, seed: int, callbacks: list[Callback]) -> Trainer:
        return Trainer(
            model,
            train_data(seed),
            loss,
            "adam",
            optimizer_kwargs={"lr": s.lr},
            steps=steps,
            batch_size=bs,
            seed=seed,
            callbacks=callbacks,
        )

    # one untimed A on a few images first: the first torch.func transform of a process pays one-off start-up costs
    # that would otherwise land on the first timed opening (Table 3)
    xb, yb = next(iter(iterate_batches(data, 8) if pair else data.with_order(False)))
    warm = build_model("tunnels_cnn", shape, classes, width=s.width, seed=s.seed)
    split_matrices(warm, (xb[:8], yb[:8]), loss, ["conv4", "conv5"], train=True)
    stats_data = data if pair else data.with_order(False)

    def full(model: nn.Module) -> float:
        return _full_loss(model, stats_data, s.batch_size, None if pair else 50)

    def pre_run(rep: int) -> tuple[list[float], float, nn.Module, float]:
        at = _LossAt(s.open_at - s.window, full)
        tr = trainer(init, s.open_at, rep, [at])
        losses, sec = _train_losses(tr)
        return losses, sec, tr.model, at.value

    tried: list[list[float]] = []
    first: tuple[list[float], float, nn.Module, float] | None = None
    conv: dict[str, Any] = {}
    if s.start == "tied":  # the built plateau: the tied network trained to convergence once, shared by every rep
        init = tie_units(build_model("tunnels_cnn", shape, classes, width=s.width, seed=s.seed))
        g0 = _full_grad_sq(init, data if pair else data.with_order(False), s.batch_size, None if pair else 50)
        tr = Trainer(
            init,
            train_data(s.seed),
            loss,
            "adam",
            optimizer_kwargs={"lr": s.converge_lr},
            steps=s.converge_steps,
            batch_size=bs,
            seed=s.seed,
        )
        c_losses, c_sec = _train_losses(tr)
        init = tr.model
        tried.append([s.seed, is_stuck(c_losses, s.window, s.stuck_tol)[1]])
        conv = {"grad_sq_init": g0, "curve": _binned(c_losses, s.bin), "sec": c_sec, "steps": s.converge_steps}
    else:  # the paper's search: initializations in a fixed order until one gets stuck (repetition 0 decides)
        for init_seed in tqdm(
            range(s.seed, s.seed + s.max_inits), disable=not progress, leave=False, desc="init search"
        ):
            init = build_model("tunnels_cnn", shape, classes, width=s.width, seed=init_seed)
            first = pre_run(0)
            stuck, rel = is_stuck(first[0], s.window, s.stuck_tol)
            tried.append([init_seed, rel])
            if stuck:
                break
    arms = s.arms
    curves: dict[str, list[list[float]]] = {a: [] for a in arms}
    loss_end: dict[str, list[float]] = {a: [] for a in arms}
    times: dict[str, Any] = {"pre": [], **{k: {a: [] for a in arms} for k in ("post", "open", "a", "eigen")}}
    loss_open, stuck_reps, n_steps = [], [], 0
    rho: dict[str, dict[str, float]] = {}
    units: dict[str, dict[str, int]] = {}
    grad_sq = float("nan")
    spread: list[float] = []
    full_before: list[float] = []
    full_open: list[float] = []
    full_end: dict[str, list[float]] = {a: [] for a in arms}
    full_tail: dict[str, list[float]] = {a: [] for a in arms}
    base = _Baselines(s, stats_data)
    sites = {"conv4": 1, "conv5": 1}  # App. B.3: "a single filter to each of the two last hidden layers"
    for rep in tqdm(range(s.repetitions), disable=not progress, leave=False, desc="fig2 right"):
        if rep == 0 and first is not None:  # the search's last run is repetition 0's run to the opening
            pre, pre_sec, state, before = first
        else:  # tied start: every repetition runs its plateau phase from the converged network
            pre, pre_sec, state, before = pre_run(rep)
        full_before.append(before)
        full_open.append(full(state))
        times["pre"].append(pre_sec + conv.get("sec", 0.0))  # every run includes the shared convergence run
        n_steps += s.open_at
        stuck_reps.append(is_stuck(pre, s.window, s.stuck_tol)[1])
        loss_open.append(float(np.mean(pre[-s.window :])))
        if rep == 0:
            grad_sq = _full_grad_sq(state, data if pair else data.with_order(False), s.batch_size, None if pair else 50)
        base.at_opening(state)
        for arm in arms:
            opens = arm in ("proposed", "random")
            sched = TimedTunnelSchedule(
                0,
                sites,
                action="open" if opens else "restart",  # the baselines get the control's restart and warm-up
                mode=arm if opens else "proposed",
                t=s.t,
                stats_train=True,
                stats_batch_size=s.batch_size,
                stats_data=data if pair else data.with_order(False),
                warmup_steps=s.warmup_steps,
                warmup_start=s.warmup_start,
                reset_norm_stats=True,
                seed=rep,
            )
            # the same data order after the opening in every arm of a repetition (paired comparison)
            tail = _LossAt(s.total_steps - s.open_at - s.window, full)  # Fig. 4's convergence check
            post_tr = trainer(state, s.total_steps - s.open_at, 1000 + rep, [sched, *base.callbacks(arm, rep), tail])
            post, post_sec = _train_losses(post_tr)
            base.record(arm, post_tr.model)
            full_end[arm].append(full(post_tr.model))
            full_tail[arm].append(tail.value)
            if arm == "control":
                spread.append(tied_spread(post_tr.model) if s.start == "tied" else float("nan"))
            n_steps += (s.total_steps - s.open_at) * (arm in DEEP_ARMS)
            curves[arm].append(_binned(pre + post, s.bin))
            loss_end[arm].append(float(np.mean(post[-s.window :])))
            times["post"][arm].append(post_sec)
            for k in ("open", "a", "eigen"):
                times[k][arm].append(sched.times_[k])
            if rep == 0 and opens:
                ev = sched.open_event_
                assert ev is not None
                units[arm] = {c.producer: int(c.unit) for c in ev.changes}
                rho[arm] = {c.producer: float("nan") if c.rho is None else float(c.rho) for c in ev.changes}
    n_steps += conv.get("steps", 0)
    shared = conv.get("sec", 0.0)  # counted once, though every repetition's "pre" time includes it
    train_sec = (
        shared
        + sum(p - shared for p in times["pre"])
        + sum(sum(times["post"][a]) - sum(times["open"][a]) for a in DEEP_ARMS)
    )  # training steps only: the baselines' steps carry their perturbation / NEON costs
    stuck_found = bool(stuck_reps[0] < s.stuck_tol)
    return {
        "setup": dataclasses.asdict(s),
        "data": desc,
        "init_seed": int(tried[-1][0]),
        "stuck_found": stuck_found,
        "tried": tried,
        "stuck_reps": stuck_reps,
        "curves": curves,
        "loss_open": loss_open,
        "loss_end": loss_end,
        "times": times,
        "step_time": train_sec / n_steps,
        "grad_sq": grad_sq,
        "rho": rho,
        "units": units,
        "converge": conv,
        "tied_spread": spread,
        "full_before": full_before,
        "full_open": full_open,
        "full_end": full_end,
        "full_tail": full_tail,
        "stuck_full": [abs(o - b) / o for b, o in zip(full_before, full_open)],
        **base.result(),
    }


def deep_figure(body: Callable[..., Any]) -> Callable[..., Any]:
    """Give a deep-CNN figure the one signature of the gallery's figure functions (use as ``@deep_figure``).

    The decorated function is called as ``figure(scale="quick", data_dir=None, *, cache=None, progress=False,
    setup=None)`` (``setup`` overrides the settings of ``scale``) and calls ``body(setup, res)`` with the result of
    :func:`deep_runs` (computed once, cached, shared by Fig. 2 right and Table 3).
    """

    def runs(
        s: DeepSetup, *, scale: Scale, data_dir: Path | None, cache: Path | None, progress: bool
    ) -> tuple[DeepSetup, dict[str, Any]]:
        return s, deep_runs(s, data_dir, cache, progress)

    return figure_function(lambda scale, data_dir: make_deep_setup(scale), runs)(body)  # type: ignore[no-any-return]
